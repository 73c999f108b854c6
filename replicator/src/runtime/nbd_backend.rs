//! The NBD export of a resource: maps NBD commands onto engine client requests.
//! Only a Primary with UpToDate data serves; anyone else gets a clear NBD error naming the role.

use std::rc::Rc;

use rep_nbd::server::{BlockBackend, Command, Completion, ExportInfo, Responder, Unavailable};

use super::driver::Driver;
use crate::core::ClientOp;

pub struct NbdBackend {
    pub driver: Rc<Driver>,
}

impl BlockBackend for NbdBackend {
    fn export(&self, name: &str) -> Result<ExportInfo, Unavailable> {
        let res = &self.driver.view().resource;
        if !name.is_empty() && name != res {
            return Err(Unavailable {
                message: format!("unknown export {name:?}; this socket exports {res:?}"),
            });
        }
        if let Some((_, message)) = self.driver.engine_io_refusal() {
            return Err(Unavailable {
                message: format!("rep: {message}"),
            });
        }
        Ok(ExportInfo {
            name: res.clone(),
            description: format!("rep resource {res} on {}", self.driver.view().node),
            size_bytes: self.driver.usable_bytes(),
            read_only: false,
            can_multi_conn: true,
            min_block: 1,
            preferred_block: 4096,
            max_block: 32 << 20,
        })
    }

    fn submit(&self, cmd: Command, done: Responder) {
        let (op, buf) = match cmd {
            Command::Read { offset, len } => (ClientOp::Read { offset, len }, None),
            Command::Write { offset, data, fua } => {
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                (ClientOp::Write { offset, len, fua }, Some(data))
            }
            Command::Flush => (ClientOp::Flush, None),
            Command::Trim { offset, len, fua } => (ClientOp::Trim { offset, len, fua }, None),
            Command::WriteZeroes {
                offset, len, fua, ..
            } => (ClientOp::WriteZeroes { offset, len, fua }, None),
            // A prefetch hint: the page cache does read-ahead on its own.
            Command::Cache { .. } => return done.complete(Completion::Done),
        };
        self.driver.submit_client(op, buf, done);
    }

    fn run_submitted(&self) {
        self.driver.run_submitted();
    }

    fn gate(&self) -> Option<(u32, String)> {
        self.driver.engine_io_refusal()
    }

    fn client_opened(&self) {
        self.driver.client_opened();
    }

    fn client_closed(&self) {
        self.driver.client_closed();
    }
}
