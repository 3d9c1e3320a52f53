use super::*;
use crate::fact::{Counts, End, EndRaw, Role};

fn p(s: &str) -> Expr {
    parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

fn err(s: &str) -> FilterError {
    parse(s).expect_err(s)
}

fn end() -> End<'static> {
    End {
        ts: 0,
        host: "h1",
        proto: "tcp",
        container: "web",
        process: "nginx",
        user: "www-data",
        role: Role::Server,
        peer: "10.1.2.3",
        peer_local: Some(false),
        server_port: Some(443),
        raw: Some(EndRaw {
            local_addr: "172.17.0.2".parse().unwrap(),
            local_port: 443,
            peer_addr: "10.1.2.3".parse().unwrap(),
            peer_port: 51000,
            pid: 4242,
            exe: Some("/usr/sbin/nginx"),
        }),
        sent: Counts::default(),
        received: Counts::default(),
        conversations: 1,
    }
}

fn holds(f: &str, dir: Option<&'static str>) -> bool {
    let e = end();
    EndSubject {
        end: &e,
        direction: dir,
    }
    .matches(&p(f))
}

#[test]
fn the_issue_examples_parse() {
    let e = p("container = web AND proto = tcp AND NOT server_port IN (22, 443)");
    let Expr::And(v) = &e else { panic!("{e:?}") };
    assert_eq!(v.len(), 3);
    assert!(matches!(&v[2], Expr::Not(_)));
    let e = p("addr << 10.0.0.0/8");
    let Expr::Atom(a) = e else { panic!() };
    assert_eq!(a.op, Op::Subnet);
    assert_eq!(
        a.values,
        vec![Literal::Net(Net::parse("10.0.0.0/8").unwrap())]
    );
}

#[test]
fn precedence_and_keywords() {
    // AND binds tighter than OR; keywords in any case.
    let e = p("host = a or host = b AnD proto = udp");
    let Expr::Or(v) = &e else { panic!("{e:?}") };
    assert!(matches!(&v[1], Expr::And(_)));
    assert_eq!(
        e.to_string(),
        r#"host = "a" OR (host = "b" AND proto = "udp")"#
    );
    let e = p("!(process = a || process = b) && server_port != 80");
    assert_eq!(
        e.to_string(),
        r#"NOT (process = "a" OR process = "b") AND server_port != 80"#
    );
    assert_eq!(
        p("comm = x").to_string(),
        p("process = x").to_string(),
        "aliases"
    );
    assert_eq!(p("proto = 6").to_string(), p("proto = TCP").to_string());
}

#[test]
fn display_round_trips() {
    for s in [
        r#"container IN ("a b", "c\"d") AND NOT (pid > 5 OR exe ~ "bin")"#,
        "addr !<< 192.168.0.0/16 OR peer_addr = ::1",
        "server_port NOT IN (1, 2) AND NOT port <= 1024",
        "user != \"\"",
    ] {
        let e = p(s);
        let again = p(&e.to_string());
        let strip = |e: &Expr| e.to_string();
        assert_eq!(strip(&e), strip(&again), "{s}");
    }
}

#[test]
fn errors_name_their_position() {
    let e = err("container = web AND bogus = 1");
    assert!(e.message.contains("unknown field 'bogus'"), "{e:?}");
    assert_eq!((e.start, e.end), (20, 25));
    let e = err("server_port = 99999999999999999999999");
    assert!(e.message.contains("not a port"), "{e:?}");
    assert_eq!(e.start, 14);
    let e = err("container = web AND");
    assert!(e.message.contains("end of the filter"), "{e:?}");
    let e = err("(container = web");
    assert!(e.message.contains("never closed"), "{e:?}");
    assert_eq!((e.start, e.end), (0, 1));
    let e = err("container = web)");
    assert!(e.message.contains("unbalanced"), "{e:?}");
    let e = err("container = web proto = tcp");
    assert!(e.message.contains("expected AND or OR"), "{e:?}");
    let e = err("pid ~ 5");
    assert!(e.message.contains("does not take"), "{e:?}");
    let e = err("addr = 10.0.0.0/8");
    assert!(e.message.contains("addr << 10.0.0.0/8"), "{e:?}");
    let e = err("role = boss");
    assert!(e.message.contains("client, server"), "{e:?}");
    let e = err("proto = 300");
    assert!(e.message.contains("not a protocol"), "{e:?}");
    let e = err("addr << 10.0.0.0/33");
    assert!(e.message.contains("prefix length"), "{e:?}");
    // Positions count UTF-16 code units, as JavaScript indexes strings.
    let e = err("container = \"€😀\" AND x = 1");
    assert_eq!(e.start, 22, "{e:?}");
}

#[test]
fn hostile_inputs_are_refused_or_kept_as_data() {
    // Quotes and InfluxQL/SQL syntax inside a quoted value are data.
    let e = p(r#"container = "web' OR 1=1; DROP MEASUREMENT flow; --""#);
    let Expr::Atom(a) = e else { panic!() };
    assert_eq!(
        a.values,
        vec![Literal::Text(
            "web' OR 1=1; DROP MEASUREMENT flow; --".into()
        )]
    );
    // Outside quotes they do not lex.
    let e = err("container = web; DROP DATABASE x");
    assert!(e.message.contains("unexpected character ';'"), "{e:?}");
    assert_eq!(e.start, 15);
    let e = err("process = /.*/");
    assert!(
        e.message.contains("unexpected character") || e.message.contains("expected"),
        "{e:?}"
    );
    assert!(p(r#"process ~ ".*[(|\\""#)
        .to_string()
        .contains(r#".*[(|\\"#));
    let e = err("container = \"a\nb\"");
    assert!(e.message.contains("control character"), "{e:?}");
    let e = err("container = \"unterminated");
    assert!(e.message.contains("unterminated"), "{e:?}");
    let e = err(r#"container = "a\x""#);
    assert!(e.message.contains("unknown escape"), "{e:?}");
    let huge = "a".repeat(1 << 20);
    let e = err(&format!("container = {huge}"));
    assert!(e.message.contains("bytes long"), "{e:?}");
    let e = err(&format!("container = \"{}\"", "b".repeat(300)));
    assert!(e.message.contains("longer than"), "{e:?}");
    let deep = format!("{}container = a{}", "(".repeat(40), ")".repeat(40));
    assert!(err(&deep).message.contains("nested"));
    let many = vec!["pid = 1"; 70].join(" OR ");
    assert!(err(&many).message.contains("comparisons"));
    assert!(err("").message.contains("empty"));
    assert!(err("\u{0}").message.contains("U+0000"));
}

#[test]
fn evaluation_on_an_end() {
    assert!(holds("container = web AND proto = tcp", None));
    assert!(!holds(
        "container = web AND NOT server_port IN (22, 443)",
        None
    ));
    assert!(holds("NOT server_port IN (22, 80)", None));
    assert!(holds("server_port != 80", None));
    assert!(holds("addr << 10.0.0.0/8", None), "the peer address");
    assert!(holds("addr << 172.16.0.0/12", None), "the local address");
    assert!(!holds("addr << 192.168.0.0/16", None));
    assert!(holds("addr !<< 192.168.0.0/16", None));
    assert!(holds(
        "peer_addr = 10.1.2.3 AND local_addr = 172.17.0.2",
        None
    ));
    assert!(
        holds("process ~ GIN", None),
        "contains is ASCII case-insensitive"
    );
    assert!(holds("exe ~ sbin AND pid >= 4242 AND pid < 4243", None));
    assert!(holds(
        "port IN (51000) AND role = server AND peer_local = false",
        None
    ));
    assert!(holds("user = \"www-data\"", None));
    assert!(!holds("direction = out", None), "no direction given");
    assert!(holds("direction = out", Some("out")));
    assert!(!holds("direction = out", Some("in")));
    assert!(holds("NOT direction = out", Some("in")));
}

#[test]
fn nnf_pushes_negation_to_atoms() {
    let e = p("NOT (container = a AND (proto = tcp OR NOT pid = 3))").nnf();
    assert_eq!(
        e.to_string(),
        r#"container != "a" OR (proto != "tcp" AND pid = 3)"#
    );
    // Same truth value on a sample.
    for f in [
        "NOT (container = web AND (proto = tcp OR NOT pid = 3))",
        "NOT (container = x OR NOT (role = server AND NOT peer = a))",
    ] {
        let a = p(f);
        let b = a.nnf();
        let e = end();
        let s = EndSubject {
            end: &e,
            direction: None,
        };
        assert_eq!(s.matches(&a), s.matches(&b), "{f}");
    }
}

#[test]
fn direction_is_refused_for_conversations() {
    let src = "container = a AND dir = out";
    let e = p(src).check_conversation_scope(src).expect_err("direction");
    assert_eq!(e.start, 18);
    assert!(p("container = a").check_conversation_scope("").is_ok());
}

#[test]
fn networks() {
    let n = Net::parse("10.1.2.3/8").unwrap();
    assert_eq!(n.to_string(), "10.0.0.0/8");
    assert!(n.contains("10.200.0.1".parse().unwrap()));
    assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!n.contains("11.0.0.1".parse().unwrap()));
    assert!(Net::parse("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    let v6 = Net::parse("fd00::/8").unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert!(Net::parse("::/129").is_err());
}
