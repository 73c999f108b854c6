//! Tokens of DRBD's configuration language: words (bare or quoted), `{ } ; [ ]`, `#` comments.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word {
        text: String,
        quoted: bool,
    },
    LBrace,
    RBrace,
    Semi,
    LBracket,
    RBracket,
    /// A string drbdadm's scanner cannot read either (unterminated, or broken by a newline):
    /// an error wherever the parser meets it, except inside a `skip { }` block, which drbdadm
    /// reads token by token and ignores.
    Bad(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
    pub col: u32,
}

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '{' | '}' | ';' | '[' | ']' | '"' | '#'))
}

pub fn lex(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    while let Some(&c) = chars.peek() {
        let (tl, tc) = (line, col);
        let mut bump = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let c = chars.next();
            if c == Some('\n') {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
            c
        };
        let simple = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            ';' => Some(Tok::Semi),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            _ => None,
        };
        if let Some(tok) = simple {
            bump(&mut chars);
            out.push(Token {
                tok,
                line: tl,
                col: tc,
            });
            continue;
        }
        if c.is_whitespace() {
            bump(&mut chars);
            continue;
        }
        if c == '#' {
            while let Some(&c) = chars.peek() {
                if c == '\n' {
                    break;
                }
                bump(&mut chars);
            }
            continue;
        }
        if c == '"' {
            bump(&mut chars);
            let mut s = String::new();
            let bad = loop {
                match bump(&mut chars) {
                    None => break Some("unterminated quoted string; add the closing '\"'"),
                    Some('"') => break None,
                    Some('\\') => match bump(&mut chars) {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(other),
                        None => break Some("unterminated quoted string; add the closing '\"'"),
                    },
                    Some('\n') => {
                        break Some(
                            "newline inside a quoted string; close the string on the same line",
                        )
                    }
                    Some(ch) => s.push(ch),
                }
            };
            let tok = match bad {
                Some(message) => Tok::Bad(message),
                None => Tok::Word {
                    text: s,
                    quoted: true,
                },
            };
            out.push(Token {
                tok,
                line: tl,
                col: tc,
            });
            continue;
        }
        let mut s = String::new();
        while let Some(&c) = chars.peek() {
            if !is_word_char(c) {
                break;
            }
            s.push(c);
            bump(&mut chars);
        }
        out.push(Token {
            tok: Tok::Word {
                text: s,
                quoted: false,
            },
            line: tl,
            col: tc,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_comments_and_positions() {
        let t = lex("a \"b \\\"c\\\"\" # x\n{ d; }[0]");
        assert_eq!(
            t[0].tok,
            Tok::Word {
                text: "a".into(),
                quoted: false
            }
        );
        assert_eq!(
            t[1].tok,
            Tok::Word {
                text: "b \"c\"".into(),
                quoted: true
            }
        );
        assert_eq!((t[2].line, t[2].col), (2, 1));
        assert_eq!(t.len(), 9);
        assert!(matches!(lex("\"open")[0].tok, Tok::Bad(_)));
    }
}
