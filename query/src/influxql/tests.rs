use super::*;
use crate::filter::parse;

const S: i64 = 1_000_000_000;

fn range() -> TimeRange {
    TimeRange {
        from: 1000 * S,
        to: 4600 * S,
    }
}

fn buckets() -> Buckets {
    Buckets::new(range(), 60 * S)
}

#[test]
fn literals_are_escaped() {
    assert_eq!(string_lit("it's a \\ test"), r"'it\'s a \\ test'");
    assert_eq!(ident("we\"ird\\"), r#""we\"ird\\""#);
    assert_eq!(contains_regex("a.b/c"), r"/[aA]\x{2e}[bB]\x{2f}[cC]/");
    assert_eq!(
        contains_regex(".*[(|\\"),
        r"/\x{2e}\x{2a}\x{5b}\x{28}\x{7c}\x{5c}/"
    );
    assert_eq!(contains_regex("ü 1"), r"/ü\x{20}1/");
}

#[test]
fn rollup_statement_groups_by_dims_and_filter_fields() {
    let f = parse("container = web AND NOT (peer = 'x' OR process IN (a, b))").unwrap();
    let group = group_fields(&[Dim::User], Some(&f));
    let q = InfluxSchema::default()
        .rollup_statement(range(), &buckets(), &group, Some(&f))
        .unwrap();
    assert_eq!(
        q,
        "SELECT sum(\"bytes\") AS \"bytes\", sum(\"packets\") AS \"packets\", sum(\"conversations\") AS \"conversations\" \
         FROM \"flow_rollup\" WHERE time >= 1000000000000 AND time < 4600000000000 \
         AND ((\"container\" = 'web') AND ((\"peer\" != 'x') AND ((\"comm\" != 'a') AND (\"comm\" != 'b')))) \
         GROUP BY time(60s), \"direction\", \"user\", \"container\", \"comm\", \"peer\" fill(none)"
    );
}

#[test]
fn hostile_values_stay_inside_literals() {
    let f = parse(r#"container = "x' OR 1=1; DROP DATABASE flowlens; --" AND process ~ "/.*/""#)
        .unwrap();
    let q = InfluxSchema::default()
        .rollup_statement(range(), &buckets(), &group_fields(&[], Some(&f)), Some(&f))
        .unwrap();
    assert!(
        q.contains(r#""container" = 'x\' OR 1=1; DROP DATABASE flowlens; --'"#),
        "{q}"
    );
    assert!(q.contains(r#""comm" =~ /\x{2f}\x{2e}\x{2a}\x{2f}/"#), "{q}");
}

#[test]
fn untranslatable_atoms_widen_never_narrow() {
    let s = InfluxSchema::default();
    // A CIDR on the rollup: left out (true).
    let f = parse("addr << 10.0.0.0/8 AND container = a").unwrap();
    let q = s
        .rollup_statement(range(), &buckets(), &[Field::Container], Some(&f))
        .unwrap();
    assert!(q.contains("AND (\"container\" = 'a') GROUP"), "{q}");
    // OR with an unknown side: the whole OR is true.
    let f = parse("server_port < 1024 OR container = a").unwrap();
    let q = s
        .rollup_statement(range(), &buckets(), &[Field::Container], Some(&f))
        .unwrap();
    assert!(q.contains("time < 4600000000000 GROUP BY"), "{q}");
}

#[test]
fn flow_tag_statements_per_perspective() {
    let s = InfluxSchema::default();
    let f = parse("role = server AND server_port = 443 AND container = web").unwrap();
    let group = group_fields(&[Dim::Container], Some(&f));
    let [c, sv] = s.flow_tag_statements(range(), &buckets(), &group, Some(&f));
    assert!(c.is_none(), "client ends cannot be servers: {c:?}");
    let sv = sv.unwrap();
    assert!(sv.contains("sum(\"bytes_s2c\") AS \"sent_bytes\""), "{sv}");
    assert!(sv.contains("\"server_local\" = 'true'"), "{sv}");
    assert!(
        sv.contains("AND ((\"server_port\" = '443') AND (\"server_container_name\" = 'web'))"),
        "{sv}"
    );
    assert!(
        sv.contains("GROUP BY time(60s), \"server_container_name\", \"server_port\" fill(none)"),
        "{sv}"
    );
}

#[test]
fn records_statement_looks_at_both_ends() {
    let s = InfluxSchema {
        rp: Some("week".into()),
        ..InfluxSchema::default()
    };
    let f =
        parse("container = web AND addr = 10.0.0.1 AND NOT process = x AND proto != udp").unwrap();
    let q = s.records_statement(range(), Some(&f), None).unwrap();
    assert!(q.ends_with(" GROUP BY *"), "{q}");
    assert!(q.contains("FROM \"week\".\"flow\""), "{q}");
    assert!(
        q.contains("(\"client_container_name\" = 'web') OR (\"server_container_name\" = 'web')"),
        "{q}"
    );
    assert!(
        q.contains("(\"client_addr\" = '10.0.0.1') OR (\"server_addr\" = '10.0.0.1')"),
        "{q}"
    );
    assert!(!q.contains("'x'"), "a negated end atom is left out: {q}");
    assert!(q.contains("\"proto\" != 'udp'"), "{q}");
}

#[test]
fn schema_variants() {
    let s = InfluxSchema {
        rollup_user_tag: "username",
        rollup_server_port: true,
        ..InfluxSchema::default()
    };
    let caps = s.capabilities();
    assert!(caps.rollup.unwrap().contains(Field::ServerPort));
    let q = s
        .rollup_statement(range(), &buckets(), &[Field::User, Field::ServerPort], None)
        .unwrap();
    assert!(
        q.ends_with("\"direction\", \"username\", \"server_port\" fill(none)"),
        "{q}"
    );
    let (q, tag) = s.values_statement(range(), Field::User).unwrap();
    assert_eq!(tag, "username");
    assert!(q.ends_with("GROUP BY \"username\""), "{q}");
    assert!(s.values_statement(range(), Field::Pid).is_none());
}
