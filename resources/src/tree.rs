//! The generic statement tree: `words... ;` or `words... { statements }`, with includes
//! expanded in place. The typed model is built on top of it, and `dump` prints it back, so
//! nothing the user wrote is lost in a round-trip.

use std::path::{Path, PathBuf};

use crate::error::ParseError;
use crate::keywords;
use crate::lexer::{lex, Tok, Token};

/// Includes nested deeper than this are a loop.
const MAX_INCLUDE_DEPTH: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum WordKind {
    Bare,
    Quoted,
    /// `[` or `]` (meta-disk index, IPv6 address).
    Bracket,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Word {
    pub text: String,
    pub kind: WordKind,
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stmt {
    pub words: Vec<Word>,
    pub block: Option<Vec<Stmt>>,
    /// The file as the user would name it (top file as given, includes as written).
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        self.words.first().map_or("", |w| w.text.as_str())
    }
    pub fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(&self.file, self.line, self.col, message)
    }
    pub fn err_at(&self, w: &Word, message: impl Into<String>) -> ParseError {
        ParseError::new(&self.file, w.line, w.col, message)
    }
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    file: &'a str,
    /// Directory includes are resolved against (the including file's directory).
    base_dir: &'a Path,
    /// Directory prefix used to name included files in messages.
    display_dir: PathBuf,
    depth: u32,
}

pub fn parse_text(
    text: &str,
    file: &str,
    base_dir: &Path,
    display_dir: &Path,
    depth: u32,
) -> Result<Vec<Stmt>, ParseError> {
    let toks = lex(text);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        file,
        base_dir,
        display_dir: display_dir.to_owned(),
        depth,
    };
    p.stmts(None)
}

impl Parser<'_> {
    fn stmts(&mut self, open: Option<(u32, u32)>) -> Result<Vec<Stmt>, ParseError> {
        let mut out = Vec::new();
        loop {
            let Some(t) = self.toks.get(self.pos) else {
                return match open {
                    Some((l, c)) => Err(ParseError::new(
                        self.file,
                        l,
                        c,
                        "unexpected end of file: the '{' opened here is never closed; add the missing '}'",
                    )),
                    None => Ok(out),
                };
            };
            match &t.tok {
                Tok::RBrace if open.is_some() => {
                    self.pos += 1;
                    return Ok(out);
                }
                Tok::RBrace => {
                    return Err(ParseError::new(
                        self.file,
                        t.line,
                        t.col,
                        "unexpected '}' without a matching '{'; remove it",
                    ));
                }
                // drbdadm reads no empty statement anywhere (`;;`, `};`).
                Tok::Semi => {
                    return Err(ParseError::new(
                        self.file,
                        t.line,
                        t.col,
                        "unexpected ';' without a statement before it; remove it",
                    ));
                }
                Tok::LBrace => {
                    return Err(ParseError::new(
                        self.file,
                        t.line,
                        t.col,
                        "'{' without a keyword before it",
                    ));
                }
                Tok::Bad(message) => {
                    return Err(ParseError::new(self.file, t.line, t.col, *message));
                }
                Tok::Word {
                    text,
                    quoted: false,
                } if open.is_none() && text == "skip" => {
                    self.skip()?;
                }
                _ => {
                    let stmt = self.stmt()?;
                    if stmt.keyword() == "include" && stmt.block.is_none() {
                        out.extend(self.include(&stmt)?);
                    } else {
                        out.push(stmt);
                    }
                }
            }
        }
    }

    fn stmt(&mut self) -> Result<Stmt, ParseError> {
        let first = &self.toks[self.pos];
        let (line, col) = (first.line, first.col);
        let mut words = Vec::new();
        loop {
            let Some(t) = self.toks.get(self.pos) else {
                let last = words
                    .last()
                    .map_or(String::new(), |w: &Word| w.text.clone());
                return Err(ParseError::new(
                    self.file,
                    line,
                    col,
                    format!("unexpected end of file after '{last}'; a ';' is missing"),
                ));
            };
            match &t.tok {
                Tok::Word { text, quoted } => {
                    let kind = if *quoted {
                        WordKind::Quoted
                    } else {
                        WordKind::Bare
                    };
                    words.push(Word {
                        text: text.clone(),
                        kind,
                        line: t.line,
                        col: t.col,
                    });
                }
                Tok::LBracket | Tok::RBracket => {
                    let text = if t.tok == Tok::LBracket { "[" } else { "]" };
                    words.push(Word {
                        text: text.into(),
                        kind: WordKind::Bracket,
                        line: t.line,
                        col: t.col,
                    });
                }
                Tok::Semi => {
                    self.pos += 1;
                    return Ok(Stmt {
                        words,
                        block: None,
                        file: self.file.to_owned(),
                        line,
                        col,
                    });
                }
                Tok::LBrace => {
                    self.pos += 1;
                    let block = self.stmts(Some((t.line, t.col)))?;
                    return Ok(Stmt {
                        words,
                        block: Some(block),
                        file: self.file.to_owned(),
                        line,
                        col,
                    });
                }
                Tok::Bad(message) => {
                    return Err(ParseError::new(self.file, t.line, t.col, *message));
                }
                Tok::RBrace => {
                    let so_far: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
                    return Err(ParseError::new(
                        self.file,
                        t.line,
                        t.col,
                        format!(
                            "';' expected after '{}', but got '}}'; end the statement with ';'",
                            so_far.join(" ")
                        ),
                    ));
                }
            }
            self.pos += 1;
        }
    }

    /// `skip [NAME] { ... }` at the top level comments out a block, as in drbdadm: its tokens
    /// are read only to match the braces (free text, even broken strings, is fine), and
    /// nothing of it is kept, so `dump` leaves it out as drbdadm does.
    fn skip(&mut self) -> Result<(), ParseError> {
        let at = &self.toks[self.pos];
        let (line, col) = (at.line, at.col);
        self.pos += 1;
        let expected = |t: Option<&Token>| {
            let (l, c) = t.map_or((line, col), |t| (t.line, t.col));
            ParseError::new(
                self.file,
                l,
                c,
                "'skip [NAME] {' expected: skip comments out a block, e.g. skip { resource r9 { ... } }",
            )
        };
        match self.toks.get(self.pos).map(|t| &t.tok) {
            Some(Tok::LBrace) => {}
            Some(Tok::Word { text, quoted }) if *quoted || keywords::is_plain_string(text) => {
                self.pos += 1;
                if self.toks.get(self.pos).map(|t| &t.tok) != Some(&Tok::LBrace) {
                    return Err(expected(self.toks.get(self.pos)));
                }
            }
            _ => return Err(expected(self.toks.get(self.pos))),
        }
        self.pos += 1;
        let mut level = 1u32;
        while level > 0 {
            let Some(t) = self.toks.get(self.pos) else {
                return Err(ParseError::new(
                    self.file,
                    line,
                    col,
                    "reached the end of the file inside this skip block; add the missing '}'",
                ));
            };
            match t.tok {
                Tok::LBrace => level += 1,
                Tok::RBrace => level -= 1,
                _ => {}
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn include(&mut self, stmt: &Stmt) -> Result<Vec<Stmt>, ParseError> {
        let [_, pattern] = stmt.words.as_slice() else {
            return Err(stmt.err(
                "include takes one quoted file name or glob, e.g. include \"drbd.d/*.res\";",
            ));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(stmt.err(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} levels (an include loop?)"
            )));
        }
        let full = if Path::new(&pattern.text).is_absolute() {
            PathBuf::from(&pattern.text)
        } else {
            self.base_dir.join(&pattern.text)
        };
        let is_glob = pattern.text.contains(['*', '?', '[']);
        let mut files: Vec<PathBuf> = if is_glob {
            let pat = full.to_string_lossy().into_owned();
            glob::glob(&pat)
                .map_err(|e| {
                    stmt.err_at(
                        pattern,
                        format!("bad include pattern '{}': {e}", pattern.text),
                    )
                })?
                .filter_map(Result::ok)
                .collect()
        } else {
            vec![full.clone()]
        };
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let text = std::fs::read(&path).map_err(|e| {
                stmt.err_at(
                    pattern,
                    format!("Failed to open include file '{}': {e}", pattern.text),
                )
            })?;
            let text = String::from_utf8_lossy(&text);
            let rel = path.strip_prefix(self.base_dir).unwrap_or(&path);
            let shown = if Path::new(&pattern.text).is_absolute() {
                path.clone()
            } else {
                self.display_dir.join(rel)
            };
            let shown_str = shown.to_string_lossy().into_owned();
            let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
            let shown_dir = shown.parent().unwrap_or(Path::new("")).to_owned();
            out.extend(parse_text(
                &text,
                &shown_str,
                &dir,
                &shown_dir,
                self.depth + 1,
            )?);
        }
        Ok(out)
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            '\n' => q.push_str("\\n"),
            _ => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Words as source text: quoted words re-quoted, brackets glued (`/dev/x [0]`, `[::1]:7789`).
pub fn words_text(words: &[Word]) -> String {
    let mut s = String::new();
    let mut prev: Option<&Word> = None;
    for w in words {
        let glue = match prev {
            None => true,
            Some(p) => {
                (p.kind == WordKind::Bracket && p.text == "[")
                    || (w.kind == WordKind::Bracket && w.text == "]")
                    || (p.kind == WordKind::Bracket && p.text == "]" && w.text.starts_with(':'))
            }
        };
        if !glue {
            s.push(' ');
        }
        match w.kind {
            WordKind::Quoted => s.push_str(&quote(&w.text)),
            _ => s.push_str(&w.text),
        }
        prev = Some(w);
    }
    s
}

/// Prints statements back as configuration text, skipping rep-only keywords drbdadm would reject.
pub fn print(stmts: &[Stmt], indent: usize, out: &mut String) {
    for s in stmts {
        if crate::keywords::REP_ONLY.contains(&s.keyword()) {
            continue;
        }
        out.push_str(&" ".repeat(indent));
        match s.words.as_slice() {
            [k, rest @ ..] if s.block.is_none() && !rest.is_empty() => {
                let key = words_text(std::slice::from_ref(k));
                out.push_str(&format!("{key:<16} {:>3};\n", words_text(rest)));
                continue;
            }
            _ => out.push_str(&words_text(&s.words)),
        }
        match &s.block {
            Some(b) => {
                out.push_str(" {\n");
                print(b, indent + 4, out);
                out.push_str(&" ".repeat(indent));
                out.push_str("}\n");
                if indent == 0 {
                    out.push('\n');
                }
            }
            None => out.push_str(";\n"),
        }
    }
}
