//! A `tracing` subscriber that ships each event to the parent as an [`Up::Log`] message.
//!
//! The parent re-emits it on its own subscriber with the child's pid and name as fields. Spans
//! are not forwarded: their fields stay in the child.

use crate::protocol::{encode_head, LogRecord, Up};
use crate::transport::{Outbox, Outgoing};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the forwarder as this process's global subscriber. `level` is the most verbose level
/// the parent wants (0 = ERROR … 4 = TRACE, anything else = off).
pub(super) fn install(outbox: Outbox, level: u8) {
    let max = match level {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::WARN,
        2 => LevelFilter::INFO,
        3 => LevelFilter::DEBUG,
        4 => LevelFilter::TRACE,
        _ => LevelFilter::OFF,
    };
    let forwarder = Forwarder {
        outbox,
        max,
        next_span: AtomicU64::new(1),
    };
    // Fails only if a subscriber is already set, in which case that one keeps the events.
    let _ = tracing::subscriber::set_global_default(forwarder);
}

/// Maps a level to its wire number (0 = ERROR … 4 = TRACE).
pub(crate) fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

struct Forwarder {
    outbox: Outbox,
    max: LevelFilter,
    next_span: AtomicU64,
}

struct Message<'a>(&'a mut String, &'a mut String);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let (mut message, mut fields) = (String::new(), String::new());
        event.record(&mut Message(&mut message, &mut fields));
        message.push_str(&fields);
        let record = LogRecord {
            level: level_number(event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message,
        };
        if let Ok(head) = encode_head(&Up::Log(record)) {
            let _ = self.outbox.send(Outgoing::new(head, Vec::new()));
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
