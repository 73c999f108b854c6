//! The driver's side of the helpers: `Output::Handler` and `Output::RunHandler` start them
//! (`super`), and a waited one's exit comes back as `HandlerDone`. Kept out of `driver/`
//! so that the driver imports neither the helpers nor the built-in outdater.

use std::rc::Rc;

use crate::core::{Input, IoId};
use crate::runtime::driver::Driver;

impl Driver {
    fn handler_env(&self) -> super::HandlerEnv<'_> {
        super::HandlerEnv {
            config: &self.config_path,
            run_dir: &self.paths.dir,
        }
    }

    pub(crate) fn run_handler(&self, name: &str) {
        let runs = std::sync::Arc::clone(&self.metrics.handler_runs);
        if !super::run(&self.view(), &self.handler_env(), name, runs) {
            tracing::debug!(resource = %self.paths.resource, "no {name} handler configured");
        }
    }

    /// A handler the engine waits for: its exit status comes back as `HandlerDone`. Not
    /// configured: fence-peer is done by the built-in outdater, any other counts as success.
    pub(crate) fn run_waited_handler(self: &Rc<Self>, io: IoId, name: &'static str) {
        let view = self.view();
        if super::configured(&view, name) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let runs = std::sync::Arc::clone(&self.metrics.handler_runs);
            let started = super::run_waited(&view, &self.handler_env(), name, runs, move |exit| {
                let _ = tx.send(exit);
            });
            if !started {
                self.queue(Input::HandlerDone { io, exit: None });
                return;
            }
            let this = Rc::clone(self);
            tokio_uring::spawn(async move {
                let exit = rx.await.unwrap_or(None);
                this.feed(Input::HandlerDone { io, exit });
            });
        } else if name == "fence-peer" {
            let this = Rc::clone(self);
            tokio_uring::spawn(async move {
                let code = crate::runtime::outdater::outdate_peer(Rc::clone(&this)).await;
                this.feed(Input::HandlerDone {
                    io,
                    exit: Some(code),
                });
            });
        } else {
            self.queue(Input::HandlerDone { io, exit: Some(0) });
        }
    }
}
