//! The process's log: tracing's formatter, in text or JSON, and in a cluster the node's
//! name on every line, so the logs of several nodes can be read side by side.
//!
//! The name is written by the formatter itself rather than carried by a span: a span is
//! only as wide as the tasks and threads it is entered on, and a line from one that was
//! missed (a spawned task, a library's thread) would come without it.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Starts logging to stdout, at `RUST_LOG`'s levels (default `info`), with `node` on every
/// line when given.
pub fn init(format: LogFormat, node: Option<String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => {
            let inner = tracing_subscriber::fmt::format().with_ansi(ansi);
            builder
                .event_format(Named {
                    inner,
                    node,
                    json: false,
                })
                .init()
        }
        LogFormat::Json => {
            let inner = tracing_subscriber::fmt::format().json();
            builder
                .json()
                .event_format(Named {
                    inner,
                    node,
                    json: true,
                })
                .init()
        }
    }
}

/// A formatter that adds the node's name to what `inner` writes: in front of a text
/// line, or as the first field of a JSON object.
struct Named<F> {
    inner: F,
    node: Option<String>,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for Named<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(node) = &self.node else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "node={node} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let name = serde_json::to_string(node).map_err(|_| fmt::Error)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"node\":{name},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log written to memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_one_line(json: bool, node: Option<&str>) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let node = node.map(str::to_owned);
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let dispatch: tracing::Dispatch = if json {
            let inner = tracing_subscriber::fmt::format().json();
            builder
                .json()
                .event_format(Named { inner, node, json })
                .into()
        } else {
            let inner = tracing_subscriber::fmt::format().with_ansi(false);
            builder.event_format(Named { inner, node, json }).into()
        };
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(seq = 7, "applied");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_text_line_starts_with_the_node() {
        let line = log_one_line(false, Some("hub-2"));
        assert!(line.starts_with("node=hub-2 "), "{line}");
        assert!(line.contains("applied seq=7"), "{line}");
        assert!(!log_one_line(false, None).contains("node="));
    }

    #[test]
    fn a_json_line_carries_the_node_as_a_field() {
        let line = log_one_line(true, Some("hub \"2\""));
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["node"], "hub \"2\"", "{line}");
        assert_eq!(value["fields"]["seq"], 7, "{line}");
        let plain: serde_json::Value =
            serde_json::from_str(log_one_line(true, None).trim()).unwrap();
        assert!(plain.get("node").is_none());
    }
}
