//! The live view of `flowlens run` on a terminal with no other output: one
//! screen redrawn in place (ratatui) with the last interval's traffic
//! grouped by process, container or user, rates, the loss counters, the web
//! URL and the latest log lines (logs go into the view while it is shown, so
//! they do not tear it). Keys: `g` grouping, `p`/`c`/`u` a grouping, `s`
//! sort, `q` or Ctrl-C stop flowlens. When stdout is not a terminal the
//! plain summary ([`super::SummarySink`]) is used instead.

use std::{
    collections::VecDeque,
    io::{self, Stdout, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender};
use flowlens_correlator::record::ConversationRecord;
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Row as TRow, Table},
    Terminal,
};

use super::{
    live_model::{bytes, rate, Grouping, Interval, SortBy},
    RecordSink,
};
use crate::metrics::SelfMetrics;

/// Log lines kept for the view.
const LOG_LINES: usize = 200;

static CAPTURING: AtomicBool = AtomicBool::new(false);
static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The tracing writer of `main`: stderr, or the view's log pane while the
/// live view is on screen.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> Self::Writer {
        LogLine(Vec::new())
    }
}

/// One formatted log event, written out when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if CAPTURING.load(Ordering::Relaxed) {
            let text = strip_ansi(&String::from_utf8_lossy(&self.0));
            if let Ok(mut log) = LOG.lock() {
                for l in text.lines().filter(|l| !l.trim().is_empty()) {
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(l.to_owned());
                }
            }
        } else {
            let _ = io::stderr().write_all(&self.0);
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the sink sends the screen thread.
enum Update {
    Interval(Interval),
    Metrics(Box<SelfMetrics>),
}

/// The live view as a sink: the exporter's thread hands over intervals;
/// a thread of its own owns the terminal.
pub struct LiveViewSink {
    tx: Option<Sender<Update>>,
    thread: Option<JoinHandle<()>>,
    interval_s: f64,
    /// The interval being written.
    current: Interval,
    last: Option<Interval>,
}

impl LiveViewSink {
    /// Takes over the terminal (alternate screen, raw mode). `web`: the
    /// explorer's URL when it is on; `interval_s`: the export interval.
    /// `note`: a line shown under the header (the capture mode, when weaker).
    pub fn start(
        web: Option<String>,
        interval_s: f64,
        host: String,
        note: Option<&'static str>,
    ) -> io::Result<Self> {
        let mut out = io::stdout();
        enable_raw_mode()?;
        if let Err(e) = execute!(out, EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e);
        }
        CAPTURING.store(true, Ordering::Relaxed);
        let terminal = Terminal::new(CrosstermBackend::new(out))?;
        let (tx, rx) = crossbeam_channel::bounded(4);
        let thread = std::thread::Builder::new()
            .name("live-view".into())
            .spawn(move || screen(terminal, &rx, web, host, note))?;
        Ok(LiveViewSink {
            tx: Some(tx),
            thread: Some(thread),
            interval_s,
            current: Interval::begin(interval_s),
            last: None,
        })
    }

    fn restore(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if CAPTURING.swap(false, Ordering::Relaxed) {
            let _ = disable_raw_mode();
            let _ = execute!(io::stdout(), LeaveAlternateScreen);
            // What was captured goes to stderr, as it would have without the view.
            if let Ok(mut log) = LOG.lock() {
                let mut err = io::stderr();
                for l in log.drain(..) {
                    let _ = writeln!(err, "{l}");
                }
            }
        }
    }
}

impl RecordSink for LiveViewSink {
    fn begin_interval(&mut self) {
        self.current = Interval::begin(self.interval_s);
    }

    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        self.current.extend(records);
        Ok(())
    }

    fn end_interval(&mut self) -> io::Result<()> {
        let i = std::mem::replace(&mut self.current, Interval::begin(self.interval_s));
        self.last = Some(i.clone());
        if let Some(tx) = &self.tx {
            // A slow terminal skips a frame; nothing is lost (the data goes on
            // to the other sinks and the web).
            let _ = tx.try_send(Update::Interval(i));
        }
        Ok(())
    }

    fn write_self_metrics(&mut self, m: &SelfMetrics, _host: &str, _ts: i64) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Update::Metrics(Box::new(m.clone())));
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.restore();
        // The last interval stays on the terminal.
        if let Some(i) = &self.last {
            let mut out = io::stdout().lock();
            for l in plain(i, Grouping::Process, SortBy::Total, 10) {
                writeln!(out, "{l}")?;
            }
        }
        Ok(())
    }
}

impl Drop for LiveViewSink {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The view as plain lines (after the view closes).
fn plain(i: &Interval, by: Grouping, sort: SortBy, top: usize) -> Vec<String> {
    let rows = i.rows(by, sort);
    let mut v = vec![format!(
        "── {}  {} conversations, {} ({}) ──",
        i.ts,
        i.records,
        bytes(i.bytes as f64),
        rate(i.bytes as f64 / i.seconds)
    )];
    for r in rows.iter().take(top) {
        v.push(format!(
            "{:<16} {:<14} {:<10} {:>12} {:>12}",
            r.name,
            r.container,
            r.user,
            rate(r.sent_rate),
            rate(r.received_rate)
        ));
    }
    v
}

fn screen(
    mut term: Terminal<CrosstermBackend<Stdout>>,
    rx: &Receiver<Update>,
    web: Option<String>,
    host: String,
    note: Option<&'static str>,
) {
    let mut by = Grouping::Process;
    let mut sort = SortBy::Total;
    let mut interval: Option<Interval> = None;
    let mut metrics: Option<Box<SelfMetrics>> = None;
    loop {
        let _ = term.draw(|f| {
            draw(
                f,
                &View {
                    interval: interval.as_ref(),
                    metrics: metrics.as_deref(),
                    by,
                    sort,
                    web: web.as_deref(),
                    host: &host,
                    note,
                },
            )
        });
        if event::poll(Duration::from_millis(200)).unwrap_or(false) {
            if let Ok(Event::Key(k)) = event::read() {
                if k.kind == KeyEventKind::Press {
                    let before = (by, sort);
                    match k.code {
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => stop(),
                        KeyCode::Char('q') | KeyCode::Esc => stop(),
                        KeyCode::Char('g') | KeyCode::Tab => by = by.next(),
                        KeyCode::Char('p') => by = Grouping::Process,
                        KeyCode::Char('c') => by = Grouping::Container,
                        KeyCode::Char('u') => by = Grouping::User,
                        KeyCode::Char('s') => sort = sort.next(),
                        _ => {}
                    }
                    if (by, sort) != before {
                        // Another table: redraw all of it.
                        let _ = term.clear();
                    }
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Update::Interval(i)) => interval = Some(i),
                Ok(Update::Metrics(m)) => metrics = Some(m),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// `q`: stop flowlens as Ctrl-C would (raw mode turns Ctrl-C into a key).
fn stop() {
    // SAFETY: raise has no preconditions; SIGINT's handler only sets a flag.
    unsafe {
        libc::raise(libc::SIGINT);
    }
}

struct View<'a> {
    interval: Option<&'a Interval>,
    metrics: Option<&'a SelfMetrics>,
    by: Grouping,
    sort: SortBy,
    web: Option<&'a str>,
    host: &'a str,
    note: Option<&'static str>,
}

fn draw(f: &mut ratatui::Frame<'_>, v: &View<'_>) {
    let [head, table, losses, logs, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(2),
        Constraint::Length(5),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut h1 = vec![
        Span::styled("flowlens", bold),
        Span::raw(format!("  {}", v.host)),
    ];
    if let Some(i) = v.interval {
        h1.push(Span::raw(format!(
            "  interval ending {}  {} conversations  {} ({})",
            i.ts,
            i.records,
            bytes(i.bytes as f64),
            rate(i.bytes as f64 / i.seconds)
        )));
    } else {
        h1.push(Span::raw("  waiting for the first interval…"));
    }
    let mut h2 = match v.web {
        Some(u) => vec![
            Span::raw("web explorer: "),
            Span::styled(u, Style::default().fg(Color::Cyan)),
        ],
        None => vec![Span::raw("web explorer off")],
    };
    if let Some(n) = v.note {
        h2.push(Span::styled(
            format!("  · {n}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    f.render_widget(Paragraph::new(vec![Line::from(h1), Line::from(h2)]), head);

    let rows = v.interval.map(|i| i.rows(v.by, v.sort)).unwrap_or_default();
    let shown = usize::from(table.height.saturating_sub(3));
    let title = format!(
        " by {} · sort {} · {} of {} ",
        v.by.name(),
        v.sort.name(),
        rows.len().min(shown),
        rows.len()
    );
    let process = v.by == Grouping::Process;
    let header = if process {
        vec![
            "PROCESS",
            "CONTAINER",
            "USER",
            "PIDS",
            "CONVS",
            "SENT/s",
            "RECV/s",
            "SENT",
            "RECV",
        ]
    } else {
        vec![
            v.by.name(),
            "",
            "",
            "PIDS",
            "CONVS",
            "SENT/s",
            "RECV/s",
            "SENT",
            "RECV",
        ]
    };
    let body: Vec<TRow<'_>> = rows
        .iter()
        .take(shown)
        .map(|r| {
            TRow::new(vec![
                r.name.clone(),
                r.container.clone(),
                r.user.clone(),
                r.processes.to_string(),
                r.conversations.to_string(),
                rate(r.sent_rate),
                rate(r.received_rate),
                bytes(r.sent as f64),
                bytes(r.received as f64),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(16),
        Constraint::Length(14),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    f.render_widget(
        Table::new(body, widths)
            .header(TRow::new(header).style(bold))
            .block(Block::default().borders(Borders::ALL).title(title)),
        table,
    );

    let loss_line = match v.metrics {
        None => Line::from("losses: (after the first interval)"),
        Some(m) => {
            let lost = m.losses();
            if lost.is_empty() {
                Line::from(vec![
                    Span::raw("losses: "),
                    Span::styled("none", Style::default().fg(Color::Green)),
                ])
            } else {
                let text: Vec<String> = lost.iter().map(|(k, n)| format!("{k}={n}")).collect();
                Line::from(vec![
                    Span::styled(
                        format!("LOST {}: ", m.lost_total()),
                        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(text.join("  ")),
                ])
            }
        }
    };
    let exported = v.metrics.map_or(0, |m| m.records_exported);
    f.render_widget(
        Paragraph::new(vec![
            loss_line,
            Line::from(format!("records exported: {exported}")),
        ]),
        losses,
    );
    let log: Vec<Line<'_>> = LOG
        .lock()
        .map(|l| {
            let n = usize::from(logs.height.saturating_sub(1));
            l.iter()
                .skip(l.len().saturating_sub(n))
                .map(|s| Line::from(s.clone()))
                .collect()
        })
        .unwrap_or_default();
    f.render_widget(
        Paragraph::new(log).block(Block::default().borders(Borders::TOP).title(" log ")),
        logs,
    );
    f.render_widget(
        Paragraph::new("g/p/c/u group · s sort · q quit")
            .style(Style::default().fg(Color::DarkGray)),
        keys,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_are_stripped_from_captured_logs() {
        assert_eq!(
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m started"),
            " INFO started"
        );
    }
}
