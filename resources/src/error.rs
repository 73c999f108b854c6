//! Errors that name the file, line and column, and say how to fix the problem.

/// A syntax or validation error in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl ParseError {
    pub fn new(file: &str, line: u32, col: u32, message: impl Into<String>) -> ParseError {
        ParseError {
            file: file.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// A place in a configuration file.
#[derive(Debug, Clone, Default)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl Location {
    pub fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(&self.file, self.line, self.col, message)
    }
}

/// A configuration that parsed but cannot be used for what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{name}' not defined in your config (known resources: {})", known.join(", "))]
    UnknownResource { name: String, known: Vec<String> },
    #[error("'{resource}' not defined in your config (for this host): no `on {node}` section (on sections: {}); pass --node NAME or set REP_NODE", hosts.join(", "))]
    NotDefinedForHost {
        resource: String,
        node: String,
        hosts: Vec<String>,
    },
    #[error("resource {resource}: no peer section besides `on {node}`; a second `on HOST` with an address is needed to connect")]
    MissingPeer { resource: String, node: String },
    #[error("resource {resource}: {message}")]
    Invalid { resource: String, message: String },
    /// A resource rep parses and validates but cannot run yet (three hosts, a diskless
    /// witness, quorum): `up` refuses it rather than run it as a two-node resource.
    #[error("{0}")]
    NotRunYet(String),
    /// A value the parser accepts but rep cannot run with, at its place in the file.
    #[error("{0}")]
    Value(ParseError),
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small distance, as "; did you mean 'x'?".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .min();
    match best {
        Some((d, c)) if d <= 3.max(word.len() / 3) => format!("; did you mean '{c}'?"),
        _ => String::new(),
    }
}
