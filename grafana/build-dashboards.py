#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json: the flowlens dashboards (InfluxQL, raw queries).

Edit this file, not the JSON, then run it: `python3 grafana/build-dashboards.py`. The test
tests/tests/grafana_dashboards.rs checks that the JSON is what this script writes; grafana_queries.rs runs every query
against a real InfluxDB after real traffic (docs/queries.md lists them).

Conventions: counters are per-interval deltas, so time series are `sum(...)` per `$__interval`, divided
by the interval (`* 1000 / $__interval_ms`) for bytes/s, never a derivative. Tables rank with `top()` over
a subquery, so the order comes from InfluxDB, not from Grafana.
"""
import argparse
import json
import os
import re

DS = {"type": "influxdb", "uid": "flowlens-influxdb"}
SCHEMA_VERSION = 39
HERE = os.path.dirname(os.path.abspath(__file__))

# Filters shared by every query of a dashboard.
HOST = '"host" =~ /^$host$/'


def var(name, query, label=None):
    """A multi-value template variable from SHOW TAG VALUES ("All" = every value)."""
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


EXPLORER = {
    "type": "textbox",
    "name": "explorer",
    "label": "Web explorer URL",
    "query": "http://127.0.0.1:8647",
    "current": {"text": "http://127.0.0.1:8647", "value": "http://127.0.0.1:8647"},
    "hide": 0,
}


def target(query, fmt="time_series", ref="A"):
    return {"refId": ref, "datasource": DS, "rawQuery": True, "resultFormat": fmt, "query": query}


def rate_series(title, query, unit="Bps", links=None):
    t = target(query)
    # Legend: the value of the grouping tag ("web", not "flow_rollup.sum {container: web}").
    tag = re.search(r'GROUP BY time\(\$__interval\), "(\w+)"', query)
    if tag:
        t["alias"] = f"$tag_{tag.group(1)}"
    p = {
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "targets": [t],
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"drawStyle": "line", "fillOpacity": 10, "stacking": {"mode": "normal"}}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]}},
    }
    if links:
        p["fieldConfig"]["defaults"]["links"] = links
    return p


def latency_series(title, query, unit="µs"):
    """A mean latency over time: not stacked (latencies do not add), gaps where nothing was sampled."""
    p = rate_series(title, query, unit=unit)
    p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "fillOpacity": 0, "stacking": {"mode": "none"},
                                             "spanNulls": False}
    return p


def table(title, query, links=None, unit="bytes"):
    p = {
        "type": "table",
        "title": title,
        "datasource": DS,
        "targets": [target(query, fmt="table")],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
    }
    if links:
        p["fieldConfig"]["overrides"] = [
            {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "links", "value": ls}]}
            for field, ls in links.items()
        ]
    return p


def pie(title, query):
    return {
        "type": "piechart",
        "title": title,
        "datasource": DS,
        "targets": [target(query, fmt="table")],
        "fieldConfig": {"defaults": {"unit": "bytes"}, "overrides": []},
        "options": {"reduceOptions": {"values": True, "calcs": [], "fields": "/^bytes$/"}, "pieType": "donut",
                    "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}},
    }


def link(title, url):
    return {"title": title, "url": url}


def to_dash(uid, var_name, value_expr):
    """A data link to another flowlens dashboard, keeping the time range and the host."""
    return link(f"{uid.split('-')[1].capitalize()} dashboard",
                f"/d/{uid}?${{__url_time_range}}&${{host:queryparam}}&var-{var_name}={value_expr}")


def to_explorer(kind, value_expr):
    return link(f"Open in the web explorer", f"${{explorer}}/{kind}/{value_expr}")


def top_named(n, where):
    """Top n peers by bytes with the peer's DNS name (the rollup's `peer_name`, when this host resolved it)."""
    return ('SELECT top("b", "peer", ' + str(n) + ') AS "bytes", "peer", "name" FROM '
            '(SELECT sum("bytes") AS "b", last("peer_name") AS "name" FROM "flow_rollup" WHERE ' + where +
            ' AND $timeFilter GROUP BY "peer")')


def top(field_sum, tags, n, measurement, where, alias="bytes"):
    """Top n groups by a summed counter over the whole time range, ranked by InfluxDB."""
    tag_list = ", ".join(f'"{t}"' for t in tags)
    return (f'SELECT top("b", {tag_list}, {n}) AS "{alias}", {tag_list} FROM '
            f'(SELECT {field_sum} AS "b" FROM "{measurement}" WHERE {where} AND $timeFilter GROUP BY {tag_list})')


# Golden signals (docs/schema.md, flow_rollup): averages recombined from sums, never averaged again.
RTT_MEAN = 'sum("rtt_sum_us") / sum("rtt_samples")'
RTT_BY_TIME = ('SELECT ' + RTT_MEAN + ' FROM "flow_rollup" WHERE {where} AND "direction" = \'out\' AND $timeFilter '
               'GROUP BY time($__interval), {by} fill(none)')


def slowest(tags, n, where):
    """Top n groups by mean RTT over the range (sum of samples over their count), ranked by InfluxDB."""
    tag_list = ", ".join(f'"{t}"' for t in tags)
    return (f'SELECT top("rtt", {tag_list}, {n}) AS "rtt_mean_us", {tag_list}, "rtt_max_us", "samples" FROM '
            f'(SELECT {RTT_MEAN} AS "rtt", max("rtt_max_us") AS "rtt_max_us", sum("rtt_samples") AS "samples" '
            f'FROM "flow_rollup" WHERE {where} AND "direction" = \'out\' AND $timeFilter GROUP BY {tag_list})')


def errors_table(tags, where):
    """TCP errors of each group's conversations (both directions) and failed connects; a group with none has
    no row (a sum of absent fields is no value, and a computed total would be null where one is absent)."""
    tag_list = ", ".join(f'"{t}"' for t in tags)
    return ('SELECT sum("retransmits") AS "retransmits", sum("resets") AS "resets", sum("connect_errors") AS "connect_errors" '
            f'FROM "flow_rollup" WHERE {where} AND $timeFilter GROUP BY {tag_list}')


def dns_table(where):
    return ('SELECT sum("dns_queries") AS "queries", sum("dns_responses") AS "responses", '
            'sum("dns_latency_sum_us") / sum("dns_latency_samples") AS "latency_mean_us", max("dns_latency_max_us") AS "latency_max_us", '
            'sum("dns_nxdomain") AS "nxdomain", sum("dns_servfail") AS "servfail", sum("dns_refused") AS "refused", '
            'sum("dns_unanswered") AS "unanswered" FROM "flow_rollup" WHERE ' + where +
            ' AND "direction" = \'out\' AND $timeFilter GROUP BY "comm", "container"')


def signal_table(title, query, links=None):
    """A table of counts and microseconds (not bytes)."""
    t = table(title, query, links=links, unit="none")
    t["fieldConfig"]["overrides"].append(
        {"matcher": {"id": "byRegexp", "options": "_us$"}, "properties": [{"id": "unit", "value": "µs"}]})
    return t


ROLLUP_RATE = 'SELECT sum("bytes") * 1000 / $__interval_ms FROM "flow_rollup" WHERE {where} AND $timeFilter GROUP BY time($__interval), {by} fill(0)'
FLOW_BYTES = 'sum("bytes_c2s") + sum("bytes_s2c")'

CONTAINER_LINKS = [to_dash("flowlens-container", "container", "${__field.labels.container}"),
                   to_explorer("container", "${__field.labels.container}")]
PROCESS_LINKS = [to_dash("flowlens-process", "comm", "${__field.labels.comm}"),
                 to_explorer("process", "${__field.labels.comm}")]
USER_LINKS = [to_dash("flowlens-user", "username", "${__field.labels.username}"),
              to_explorer("user", "${__field.labels.username}")]


def cell_links(kind_uid_var):
    """Table cell links: field name -> links built from the cell's value."""
    out = {}
    for field, uid, var_name, kind in kind_uid_var:
        out[field] = [
            link(f"{uid.split('-')[1].capitalize()} dashboard",
                 f"/d/{uid}?${{__url_time_range}}&${{host:queryparam}}&var-{var_name}=${{__value.raw}}"),
            to_explorer(kind, "${__value.raw}"),
        ]
    return out


TALKER_LINKS = cell_links([
    ("container", "flowlens-container", "container", "container"),
    ("comm", "flowlens-process", "comm", "process"),
    ("username", "flowlens-user", "username", "user"),
])
REMOTE_LINKS = {"peer": [to_explorer("remote", "${__value.raw}")]}
PROCESS_CELL_LINKS = cell_links([("comm", "flowlens-process", "comm", "process")])


def dashboard(uid, title, variables, rows):
    panels, y, pid = [], 0, 1
    for row in rows:
        width = 24 // len(row)
        for i, p in enumerate(row):
            p = dict(p, id=pid, gridPos={"h": 9, "w": width, "x": i * width, "y": y})
            pid += 1
            panels.append(p)
        y += 9
    return {
        "uid": uid,
        "title": title,
        "tags": ["flowlens"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "links": [{"type": "dashboards", "tags": ["flowlens"], "asDropdown": False, "includeVars": False,
                   "keepTime": True, "title": "flowlens"},
                  {"type": "link", "title": "Web explorer", "url": "${explorer}", "targetBlank": True}],
        "templating": {"list": [var("host", 'SHOW TAG VALUES FROM "flow" WITH KEY = "host"')] + variables + [EXPLORER]},
        "annotations": {"list": []},
        "panels": panels,
    }


def overview():
    return dashboard("flowlens-overview", "flowlens / Overview", [], [
        [rate_series("Traffic by host", f'SELECT ({FLOW_BYTES}) * 1000 / $__interval_ms FROM "flow" WHERE {HOST} AND $timeFilter GROUP BY time($__interval), "host" fill(0)'),
         rate_series("Traffic by container (sent + received)", ROLLUP_RATE.format(where=HOST, by='"container"'), links=CONTAINER_LINKS)],
        [rate_series("Traffic by process (sent + received)", ROLLUP_RATE.format(where=HOST, by='"comm"'), links=PROCESS_LINKS),
         rate_series("Traffic by user (sent + received)", ROLLUP_RATE.format(where=HOST, by='"username"'), links=USER_LINKS)],
        [table("Top talkers (container, process, user)", top('sum("bytes")', ["container", "comm", "username"], 10, "flow_rollup", HOST), links=TALKER_LINKS),
         pie("Protocol mix", f'SELECT {FLOW_BYTES} AS "bytes" FROM "flow" WHERE {HOST} AND $timeFilter GROUP BY "proto"')],
        [table("Top remote endpoints", top_named(10, f"\"peer_local\" = 'false' AND {HOST}"), links=REMOTE_LINKS),
         table("Traffic per server port", top(FLOW_BYTES, ["server_port"], 10, "flow", "\"server_port\" != '' AND " + HOST))],
        [rate_series("Traffic per interface", 'SELECT sum("bytes") * 1000 / $__interval_ms FROM "flow_iface" WHERE ' + HOST + ' AND $timeFilter GROUP BY time($__interval), "iface" fill(0)'),
         rate_series("Collector: data lost, by reason (per second)", 'SELECT sum("lost") * 1000 / $__interval_ms FROM "flowlens_self" WHERE ' + HOST + ' AND $timeFilter GROUP BY time($__interval), "reason" fill(0)', unit="short")],
        [latency_series("Round-trip time by process (mean)", RTT_BY_TIME.format(where=HOST, by='"comm"')),
         signal_table("Slowest processes (mean RTT)", slowest(["comm", "container"], 10, HOST), links=PROCESS_CELL_LINKS)],
        [signal_table("TCP errors by process (retransmits, resets, failed connects)", errors_table(["comm", "container"], HOST), links=PROCESS_CELL_LINKS),
         signal_table("DNS health by process", dns_table(HOST), links=PROCESS_CELL_LINKS)],
    ])


def entity(uid, title, key, label, kind, extra_rows):
    where = f'{HOST} AND "{key}" =~ /^${key}$/'
    v = var(key, f'SHOW TAG VALUES FROM "flow_rollup" WITH KEY = "{key}" WHERE {HOST}', label)
    return dashboard(uid, title, [v], [
        [rate_series(f"Sent by the {label.lower()}", ROLLUP_RATE.format(where=where + " AND \"direction\" = 'out'", by=f'"{key}"')),
         rate_series(f"Received by the {label.lower()}", ROLLUP_RATE.format(where=where + " AND \"direction\" = 'in'", by=f'"{key}"'))],
        [table("Peers", top('sum("bytes")', ["peer"], 20, "flow_rollup", where), links=REMOTE_LINKS),
         table("Server ports", top('sum("bytes")', ["server_port", "role"], 20, "flow_rollup", where))],
    ] + extra_rows(where))


def container():
    return entity("flowlens-container", "flowlens / Container", "container", "Container", "container", lambda w: [
        [rate_series("Processes of the container", ROLLUP_RATE.format(where=w, by='"comm"'), links=PROCESS_LINKS),
         table("Users in the container", top('sum("bytes")', ["username"], 20, "flow_rollup", w), links=cell_links([("username", "flowlens-user", "username", "user")]))],
    ])


def process():
    return entity("flowlens-process", "flowlens / Process", "comm", "Process", "process", lambda w: [
        [table("Containers running the process", top('sum("bytes")', ["container", "username"], 20, "flow_rollup", w),
               links=cell_links([("container", "flowlens-container", "container", "container"), ("username", "flowlens-user", "username", "user")])),
         rate_series("Connections (conversations per second, by role)", 'SELECT sum("conversations") * 1000 / $__interval_ms FROM "flow_rollup" WHERE ' + w + " AND \"direction\" = 'out' AND $timeFilter GROUP BY time($__interval), \"role\" fill(0)", unit="short")],
        [latency_series("Round-trip time to its peers (mean)", RTT_BY_TIME.format(where=w, by='"peer"')),
         signal_table("Errors by peer (retransmits, resets, failed connects)", errors_table(["peer", "server_port"], w), links=REMOTE_LINKS)],
    ])


def user():
    return entity("flowlens-user", "flowlens / User", "username", "User", "user", lambda w: [
        [table("Processes of the user", top('sum("bytes")', ["comm", "container"], 20, "flow_rollup", w),
               links=cell_links([("comm", "flowlens-process", "comm", "process"), ("container", "flowlens-container", "container", "container")])),
         rate_series("Remote endpoints of the user", ROLLUP_RATE.format(where=w + " AND \"peer_local\" = 'false'", by='"peer"'))],
    ])


def host():
    return dashboard("flowlens-host", "flowlens / Host", [], [
        [rate_series("Traffic per interface", 'SELECT sum("bytes") * 1000 / $__interval_ms FROM "flow_iface" WHERE ' + HOST + ' AND $timeFilter GROUP BY time($__interval), "iface" fill(0)'),
         rate_series("Packets per interface", 'SELECT sum("packets") * 1000 / $__interval_ms FROM "flow_iface" WHERE ' + HOST + ' AND $timeFilter GROUP BY time($__interval), "iface" fill(0)', unit="pps")],
        [rate_series("Sent and received by the host's processes", ROLLUP_RATE.format(where=HOST, by='"direction"')),
         rate_series("Traffic with remote endpoints", ROLLUP_RATE.format(where=HOST + " AND \"peer_local\" = 'false'", by='"direction"'))],
        [table("Containers", top('sum("bytes")', ["container"], 20, "flow_rollup", HOST), links=cell_links([("container", "flowlens-container", "container", "container")])),
         table("Services (server ports of local processes)", top('sum("bytes")', ["server_port", "comm"], 20, "flow_rollup", HOST + " AND \"role\" = 'server'"),
               links=cell_links([("comm", "flowlens-process", "comm", "process")]))],
        [rate_series("Conversations per second", 'SELECT count("bytes_c2s") * 1000 / $__interval_ms FROM "flow" WHERE ' + HOST + ' AND $timeFilter GROUP BY time($__interval), "proto" fill(0)', unit="short"),
         pie("Protocol mix", f'SELECT {FLOW_BYTES} AS "bytes" FROM "flow" WHERE {HOST} AND $timeFilter GROUP BY "proto"')],
    ])


def conversations():
    w = HOST + ' AND ("client_container_name" =~ /^$container$/ OR "server_container_name" =~ /^$container$/)'
    cv = var("container", 'SHOW TAG VALUES FROM "flow" WITH KEY IN ("client_container_name", "server_container_name") WHERE ' + HOST, "Container")
    q = ('SELECT "client_addr", "client_port", "client_comm", "client_user", "client_container_name", '
         '"server_addr", "server_port", "server_comm", "server_user", "server_container_name", "proto", '
         '"bytes_c2s", "bytes_s2c", "packets_c2s", "packets_s2c", "client_name", "server_name", "rtt_avg_us", "connect_us", '
         '"connect_error", "retransmits_c2s", "retransmits_s2c", "resets_c2s", "resets_s2c", "client_evidence", "ifaces" '
         'FROM "flow" WHERE ' + w + ' AND $timeFilter ORDER BY time DESC LIMIT 1000')
    t = table("Conversations (latest 1000 records; one row per conversation per export interval)", q,
              links=cell_links([("client_comm", "flowlens-process", "comm", "process"), ("server_comm", "flowlens-process", "comm", "process"),
                                ("client_user", "flowlens-user", "username", "user"), ("server_user", "flowlens-user", "username", "user")]))
    t["fieldConfig"]["overrides"] += [
        {"matcher": {"id": "byRegexp", "options": "^(client|server)_port$|^packets"}, "properties": [{"id": "unit", "value": "none"}]},
        {"matcher": {"id": "byRegexp", "options": "^(client|server)_(addr|comm|user|container_name|name)$|^proto$|^client_evidence$|^ifaces$|^connect_error$"}, "properties": [{"id": "unit", "value": "string"}]},
        {"matcher": {"id": "byRegexp", "options": "_us$"}, "properties": [{"id": "unit", "value": "µs"}]},
        {"matcher": {"id": "byRegexp", "options": "^(retransmits|resets)_"}, "properties": [{"id": "unit", "value": "none"}]},
    ]
    t["gridPos"] = None
    d = dashboard("flowlens-conversations", "flowlens / Conversations", [cv], [
        [t],
        [table("Top conversations by bytes (client, server, port)", top(FLOW_BYTES, ["client_comm", "server_comm", "server_port"], 20, "flow", w))],
    ])
    d["panels"][0]["gridPos"]["h"] = 18
    d["panels"][1]["gridPos"]["y"] = 18
    return d


QUERIES_INTRO = """# InfluxQL queries: every dashboard panel, and the common questions

Written by `grafana/build-dashboards.py` (edit it, not this file). The measurements and their tags are in
[schema.md](schema.md#influxdb). In Grafana the placeholders are filled in for you; by hand, replace
`$timeFilter` with e.g. `time > now() - 1h`, `$__interval` with the bucket (`1m`), `$__interval_ms` with
the bucket in milliseconds (`60000`), and a variable such as `$container` with a regular expression of the
values (`web`, `(web|db)`, or `.*` for all; Grafana escapes regex characters in values).

How to read them:

- Counters are **per-interval deltas**: totals are `sum()`, a rate is `sum()` per `GROUP BY time()` bucket
  divided by the bucket (`* 1000 / $__interval_ms` gives per second). Never `derivative()`.
- `flow_rollup` counts each local end: a conversation between two local processes is in it twice (once per
  end). `"direction" = 'out'` alone, or `"peer_local" = 'false'`, counts each conversation once.
- Tables rank with `top()` over a subquery, so InfluxDB does the ordering.
- Always double-quote identifiers (`"username"`); no flowlens key is a keyword, but quoting is always safe.
  Addresses are fields of `flow`: to group by the other end, use the rollup's `peer` tag.

Every panel and variable query below is run by `tests/tests/grafana_queries.rs` against a real InfluxDB after
real traffic and must return exactly what that traffic implies; the common questions (here and in schema.md)
must parse, run and return rows.

## Common questions

```sql
-- Top remote endpoints (the other ends no local process owns), both directions
SELECT top("b", "peer", 10) AS "bytes", "peer" FROM (SELECT sum("bytes") AS "b" FROM "flow_rollup" WHERE "peer_local" = 'false' AND $timeFilter GROUP BY "peer")
-- Traffic per server port (each conversation once, also those with no local process)
SELECT sum("bytes_c2s") + sum("bytes_s2c") AS "bytes" FROM "flow" WHERE "server_port" != '' AND $timeFilter GROUP BY "server_port"
-- Traffic per interface, bytes per second
SELECT sum("bytes") * 1000 / $__interval_ms FROM "flow_iface" WHERE $timeFilter GROUP BY time($__interval), "iface" fill(0)
-- Per container, process, user: sent + received by the local processes
SELECT sum("bytes") FROM "flow_rollup" WHERE $timeFilter GROUP BY "container"
SELECT sum("bytes") FROM "flow_rollup" WHERE $timeFilter GROUP BY "comm"
SELECT sum("bytes") FROM "flow_rollup" WHERE $timeFilter GROUP BY "username"
-- Who talks to 10.0.0.7 (by process and user)?
SELECT sum("bytes") FROM "flow_rollup" WHERE "peer" = '10.0.0.7' AND $timeFilter GROUP BY "comm", "username", "container"
-- Mean round-trip time per process (recombined from sums: never average the averages)
SELECT sum("rtt_sum_us") / sum("rtt_samples") AS "rtt_mean_us" FROM "flow_rollup" WHERE "direction" = 'out' AND $timeFilter GROUP BY "comm"
-- Failed connects, retransmits and resets per container
SELECT sum("connect_errors") AS "connect_errors", sum("retransmits") AS "retransmits", sum("resets") AS "resets" FROM "flow_rollup" WHERE $timeFilter GROUP BY "container"
-- What was lost, by reason
SELECT sum("lost") FROM "flowlens_self" WHERE $timeFilter GROUP BY "reason"
```
"""


def queries_md(dashes):
    out = [QUERIES_INTRO]
    for d in dashes:
        out.append(f"\n## {d['title']} (`{d['uid']}`)\n")
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                out.append(f"- variable `${v['name']}`: `{v['query']}`")
        out.append("")
        for p in d["panels"]:
            for t in p["targets"]:
                out.append(f"**{p['title']}** ({p['type']})\n\n```sql\n{t['query']}\n```\n")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "dashboards"), help="output directory")
    ap.add_argument("--docs", default=os.path.join(HERE, "..", "docs", "queries.md"), help="queries.md path")
    args = ap.parse_args()
    dashes = [("overview", overview()), ("container", container()), ("process", process()),
              ("user", user()), ("host", host()), ("conversations", conversations())]
    for name, d in dashes:
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(args.docs, "w") as f:
        f.write(queries_md([d for _, d in dashes]))


if __name__ == "__main__":
    main()
