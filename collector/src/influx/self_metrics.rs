//! The collector's loss counters as line protocol: measurement `flowlens_self`, one point per loss reason
//! per interval with what was lost *in that interval* (a delta, like every flowlens counter: `sum()` per
//! time bucket), zeros included so a dashboard shows every reason. docs/schema.md ("flowlens_self").

use std::collections::HashMap;

use super::encode::{push_escaped_tag, push_measurement};

/// Measurement of the collector's own counters.
pub const SELF_MEASUREMENT: &str = "flowlens_self";

/// Turns cumulative loss counters into per-interval points.
#[derive(Debug, Default)]
pub struct SelfMetricsEncoder {
    last: HashMap<&'static str, u64>,
}

impl SelfMetricsEncoder {
    /// Appends `flowlens_self,host=<host>,reason=<reason> lost=<delta>i <ts>` per reason; returns the lines.
    /// A counter below its last value (a restart of its source) counts from zero again.
    pub fn encode(
        &mut self,
        losses: &[(&'static str, u64)],
        host: &str,
        ts_unix_ns: i64,
        buf: &mut Vec<u8>,
    ) -> usize {
        for (reason, total) in losses {
            let last = self.last.insert(reason, *total).unwrap_or(0);
            let delta = if *total >= last { total - last } else { *total };
            push_measurement(buf, SELF_MEASUREMENT);
            if !host.trim_end_matches('\\').is_empty() {
                buf.extend_from_slice(b",host=");
                push_escaped_tag(buf, host);
            }
            buf.extend_from_slice(b",reason=");
            push_escaped_tag(buf, reason);
            buf.extend_from_slice(b" lost=");
            let delta = i64::try_from(delta).unwrap_or(i64::MAX);
            buf.extend_from_slice(itoa::Buffer::new().format(delta).as_bytes());
            buf.extend_from_slice(b"i ");
            buf.extend_from_slice(itoa::Buffer::new().format(ts_unix_ns).as_bytes());
            buf.push(b'\n');
        }
        losses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::parse_all;
    use super::*;

    #[test]
    fn deltas_per_reason_with_zeros_and_restarts() {
        let mut e = SelfMetricsEncoder::default();
        let mut buf = Vec::new();
        let n = e.encode(
            &[("ringbuf_full", 5), ("sockets_dropped_cap", 0)],
            "node 1",
            7,
            &mut buf,
        );
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "flowlens_self,host=node\\ 1,reason=ringbuf_full lost=5i 7\n\
             flowlens_self,host=node\\ 1,reason=sockets_dropped_cap lost=0i 7\n"
        );
        buf.clear();
        e.encode(
            &[("ringbuf_full", 12), ("sockets_dropped_cap", 0)],
            "n",
            8,
            &mut buf,
        );
        e.encode(
            &[("ringbuf_full", 3), ("sockets_dropped_cap", 1)],
            "n",
            9,
            &mut buf,
        );
        let lost: Vec<_> = parse_all(&buf)
            .iter()
            .map(|p| {
                (
                    p.tag("reason").unwrap().to_owned(),
                    p.int("lost").unwrap(),
                    p.ts,
                )
            })
            .collect();
        let want = [
            ("ringbuf_full", 7, 8),
            ("sockets_dropped_cap", 0, 8),
            ("ringbuf_full", 3, 9),
            ("sockets_dropped_cap", 1, 9),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(r, l, t)| (r.to_string(), *l, *t))
            .collect();
        assert_eq!(lost, want);
    }
}
