//! rep-resources: DRBD 8.4 `.res` files — lexer, statement tree with includes, typed model with
//! drbdadm's checks, a `dump` that drbdadm reads back to the same configuration, and the
//! per-node view (`NodeView`) a daemon runs from.

#![forbid(unsafe_code)]

mod error;
mod host;
mod keywords;
mod lexer;
mod model;
pub mod policy;
pub mod quorum;
pub mod security;
pub mod topology;
mod tree;
mod view;

use std::path::Path;

pub use error::{ConfigError, Location, ParseError};
pub use host::{Host, MetaDisk, Volume};
pub use model::{Model, Opt, Resource, Sections};
pub use policy::{
    AfterSb0, AfterSb1, AfterSb2, DigestAlg, Fencing, HmacAlg, OnIoError, OnNoDataAccessible,
    RrConflict,
};
pub use tree::{Stmt, Word, WordKind};
pub use view::{DiskConf, NetConf, NodeView, OptionsConf, Protocol, StartupConf};

/// A parsed and validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// The statements with includes inlined, as written.
    #[serde(skip)]
    pub stmts: Vec<Stmt>,
    pub model: Model,
}

/// Parses a file, following includes relative to its directory.
pub fn parse_file(path: &Path) -> Result<Config, ParseError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        ParseError::new(&shown, 0, 0, format!("cannot read the configuration: {e}; pass the right file with -c FILE or REP_CONFIG"))
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    parse_bytes(&bytes, &shown, dir)
}

/// Parses text; `base_dir` resolves relative includes, `file_name` names errors.
pub fn parse_str(text: &str, file_name: &str, base_dir: &Path) -> Result<Config, ParseError> {
    let display_dir = Path::new(file_name)
        .parent()
        .unwrap_or(Path::new(""))
        .to_owned();
    // Includes are named relative to the including file, as drbdadm does (`include/x.conf:4`).
    let display_dir = if Path::new(file_name).is_absolute() {
        std::path::PathBuf::new()
    } else {
        display_dir
    };
    let stmts = tree::parse_text(text, file_name, base_dir, &display_dir, 0)?;
    let model = model::build(&stmts)?;
    Ok(Config { stmts, model })
}

/// Like `parse_str` for arbitrary bytes (invalid UTF-8 is an error, never a panic).
pub fn parse_bytes(bytes: &[u8], file_name: &str, base_dir: &Path) -> Result<Config, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u32
            + 1;
        ParseError::new(file_name, line, 1, "the file is not valid UTF-8")
    })?;
    parse_str(text, file_name, base_dir)
}

impl Config {
    pub fn resource_names(&self) -> Vec<String> {
        self.model
            .resources
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    fn resource(&self, name: &str) -> Result<&Resource, ConfigError> {
        self.model
            .resources
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::UnknownResource {
                name: name.into(),
                known: self.resource_names(),
            })
    }

    /// The configuration as drbdadm-readable text: includes inlined, rep-only keywords left out.
    pub fn dump(&self, only: Option<&str>) -> Result<String, ConfigError> {
        let mut out = String::new();
        match only {
            None => tree::print(&self.stmts, 0, &mut out),
            Some(name) => {
                self.resource(name)?;
                let keep: Vec<Stmt> = self
                    .stmts
                    .iter()
                    .filter(|s| match s.keyword() {
                        "resource" => s.words.get(1).is_some_and(|w| w.text == name),
                        _ => true,
                    })
                    .cloned()
                    .collect();
                tree::print(&keep, 0, &mut out);
            }
        }
        Ok(out)
    }

    /// The effective settings of resource `res` on host `node`.
    pub fn node_view(&self, res: &str, node: &str) -> Result<NodeView, ConfigError> {
        view::node_view(&self.model, self.resource(res)?, node)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests83;
#[cfg(test)]
mod tests_quorum;
