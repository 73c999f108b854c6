//! Watching the engines' log from the simulator.
//!
//! Two honest engines never drop their link as a protocol error: that outcome means one of them
//! sent something the other (or the wire decoder) rejects, e.g. a packet beyond the frame
//! limit. The engine reports it only in its log ("conn( X -> ProtocolError )"), so the simulator
//! installs this subscriber for the thread that runs a cluster and counts such lines. With
//! `REP_SIM_LOG` set it also prints every event, replacing a formatting subscriber.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Clone, Default)]
pub struct LogWatch {
    print: bool,
    hits: Arc<Mutex<Vec<String>>>,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl LogWatch {
    pub fn new(print: bool) -> LogWatch {
        LogWatch {
            print,
            hits: Arc::default(),
        }
    }

    /// Protocol errors logged so far, oldest first.
    pub fn protocol_errors(&self) -> Vec<String> {
        match self.hits.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl Subscriber for LogWatch {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.print || *m.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut m = Message(String::new());
        e.record(&mut m);
        if m.0.contains("-> ProtocolError") {
            let mut h = match self.hits.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            h.push(m.0.clone());
        }
        if self.print {
            eprintln!(
                "{} {}: {}",
                e.metadata().level(),
                e.metadata().target(),
                m.0
            );
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
