//! rep extensions for transport security (docs/security.md): TLS on the NBD TCP export and on
//! the peer link, and the groups allowed to use the local sockets. Kept apart from the DRBD
//! keywords: drbdadm knows none of them (`dump` leaves them out).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::tree::Stmt;

/// `nbd-tls off|on|require;` — TLS on the NBD TCP export (`nbd-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NbdTls {
    /// Plaintext only; a client asking for STARTTLS is told the server does not do it.
    #[default]
    Off,
    /// TLS offered; plaintext clients are served too.
    On,
    /// Only clients that start TLS (and present a certificate from `nbd-tls-ca`) are served.
    Require,
}

/// What an `on` section says about security (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostSecurity {
    pub nbd_tls: Option<NbdTls>,
    pub nbd_tls_certificate: Option<PathBuf>,
    pub nbd_tls_privkey: Option<PathBuf>,
    pub nbd_tls_ca: Option<PathBuf>,
    pub nbd_socket_group: Option<String>,
    pub control_socket_group: Option<String>,
    /// This node's own certificate and key for the peer link (override `net`).
    pub tls_certificate: Option<PathBuf>,
    pub tls_privkey: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
}

/// The keywords an `on` section accepts for [`HostSecurity`].
pub const HOST_KEYWORDS: &[&str] = &[
    "nbd-tls",
    "nbd-tls-certificate",
    "nbd-tls-privkey",
    "nbd-tls-ca",
    "nbd-socket-group",
    "control-socket-group",
    "tls-certificate",
    "tls-privkey",
    "tls-ca",
];

fn one_value<'a>(f: &'a Stmt, example: &str) -> Result<&'a str, ParseError> {
    match &f.words[1..] {
        [v] if !v.text.is_empty() => Ok(&v.text),
        _ => Err(f.err(format!(
            "{} takes one value: {} {example};",
            f.keyword(),
            f.keyword()
        ))),
    }
}

impl HostSecurity {
    /// Takes `f` if it is one of [`HOST_KEYWORDS`]; `Ok(false)` if it is not ours.
    pub fn take(&mut self, f: &Stmt) -> Result<bool, ParseError> {
        if f.block.is_some() || !HOST_KEYWORDS.contains(&f.keyword()) {
            return Ok(false);
        }
        let path = |f: &Stmt| one_value(f, "/etc/rep/FILE.pem").map(PathBuf::from);
        match f.keyword() {
            "nbd-tls" => {
                self.nbd_tls = Some(match one_value(f, "off|on|require")? {
                    "off" | "no" => NbdTls::Off,
                    "on" | "yes" => NbdTls::On,
                    "require" => NbdTls::Require,
                    other => {
                        return Err(f.err(format!("nbd-tls is off, on or require, not '{other}'")))
                    }
                })
            }
            "nbd-tls-certificate" => self.nbd_tls_certificate = Some(path(f)?),
            "nbd-tls-privkey" => self.nbd_tls_privkey = Some(path(f)?),
            "nbd-tls-ca" => self.nbd_tls_ca = Some(path(f)?),
            "tls-certificate" => self.tls_certificate = Some(path(f)?),
            "tls-privkey" => self.tls_privkey = Some(path(f)?),
            "tls-ca" => self.tls_ca = Some(path(f)?),
            "nbd-socket-group" => self.nbd_socket_group = Some(one_value(f, "GROUP")?.to_owned()),
            "control-socket-group" => {
                self.control_socket_group = Some(one_value(f, "GROUP")?.to_owned())
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Settings that need others: TLS on without its files is an error at parse time.
    pub fn check(&self, f: &Stmt) -> Result<(), ParseError> {
        if matches!(self.nbd_tls, Some(NbdTls::On | NbdTls::Require)) {
            let missing: Vec<&str> = [
                ("nbd-tls-certificate", &self.nbd_tls_certificate),
                ("nbd-tls-privkey", &self.nbd_tls_privkey),
                ("nbd-tls-ca", &self.nbd_tls_ca),
            ]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                return Err(f.err(format!(
                    "nbd-tls on/require needs {} in the same section (PEM files; see docs/security.md)",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// TLS on the peer link: `net { tls yes; tls-certificate …; tls-privkey …; tls-ca …; }`, with
/// this node's `on` section able to name its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkTls {
    pub certificate: PathBuf,
    pub privkey: PathBuf,
    pub ca: PathBuf,
}

/// The security settings of one node (part of [`crate::NodeView`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecurityConf {
    pub nbd_tls: NbdTls,
    pub nbd_tls_certificate: Option<PathBuf>,
    pub nbd_tls_privkey: Option<PathBuf>,
    pub nbd_tls_ca: Option<PathBuf>,
    /// Group given read/write on the NBD Unix socket (mode 0660); `None`: root only (0600).
    pub nbd_socket_group: Option<String>,
    /// Group given read/write on the control socket (0660); `None`: root only (0600).
    pub control_socket_group: Option<String>,
    /// `Some` when `net { tls yes; }`.
    pub link_tls: Option<LinkTls>,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::NbdTls;

    const RES: &str = "resource r0 {\n  device /dev/drbd0;\n  meta-disk internal;\n  net { tls yes; tls-ca /etc/rep/ca.pem; tls-certificate /etc/rep/shared.pem; tls-privkey /etc/rep/shared.key; }\n  on node-a { disk /a.img; address 127.0.0.1:7789; nbd-listen 127.0.0.1:10809; nbd-tls require; nbd-tls-certificate /etc/rep/nbd.pem; nbd-tls-privkey /etc/rep/nbd.key; nbd-tls-ca /etc/rep/ca.pem; nbd-socket-group disk; control-socket-group adm; tls-certificate /etc/rep/a.pem; tls-privkey /etc/rep/a.key; }\n  on node-b { disk /b.img; address 127.0.0.2:7789; }\n}\n";

    fn parse(text: &str) -> Result<crate::Config, crate::ParseError> {
        crate::parse_str(text, "t.res", Path::new("/nonexistent"))
    }

    #[test]
    fn keywords_reach_the_node_view_and_stay_out_of_dump() {
        let c = parse(RES).unwrap();
        let a = c.node_view("r0", "node-a").unwrap().security;
        assert_eq!(a.nbd_tls, NbdTls::Require);
        assert_eq!(a.nbd_tls_privkey, Some(PathBuf::from("/etc/rep/nbd.key")));
        assert_eq!(a.nbd_socket_group.as_deref(), Some("disk"));
        assert_eq!(a.control_socket_group.as_deref(), Some("adm"));
        let link = a.link_tls.unwrap();
        assert_eq!(
            link.certificate,
            PathBuf::from("/etc/rep/a.pem"),
            "on wins over net"
        );
        assert_eq!(link.ca, PathBuf::from("/etc/rep/ca.pem"));
        let b = c.node_view("r0", "node-b").unwrap().security;
        assert_eq!(b.nbd_tls, NbdTls::Off);
        assert_eq!(
            b.link_tls.unwrap().privkey,
            PathBuf::from("/etc/rep/shared.key")
        );
        let d = c.dump(None).unwrap();
        for k in ["tls", "nbd-tls", "socket-group"] {
            assert!(!d.contains(k), "{k} left out of dump for drbdadm: {d}");
        }
        assert_eq!(
            parse(&d)
                .unwrap()
                .node_view("r0", "node-a")
                .unwrap()
                .security
                .link_tls,
            None
        );
    }

    #[test]
    fn incomplete_or_wrong_settings_are_refused() {
        let e = parse(&RES.replace(" nbd-tls-ca /etc/rep/ca.pem;", "")).unwrap_err();
        assert!(e.to_string().contains("nbd-tls-ca"), "{e}");
        let e = parse(&RES.replace("nbd-tls require", "nbd-tls maybe")).unwrap_err();
        assert!(e.to_string().contains("off, on or require"), "{e}");
        let c = parse(&RES.replace(" tls-privkey /etc/rep/shared.key;", "")).unwrap();
        assert!(
            c.node_view("r0", "node-a").is_ok(),
            "node-a has its own key"
        );
        let e = c.node_view("r0", "node-b").unwrap_err();
        assert!(e.to_string().contains("tls-privkey"), "{e}");
    }
}
