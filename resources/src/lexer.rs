//! Tokens of DRBD's configuration language: words (bare or quoted), `{ } ; [ ]`, `#` comments.

use crate::error::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word { text: String, quoted: bool },
    LBrace,
    RBrace,
    Semi,
    LBracket,
    RBracket,
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

pub fn lex(text: &str, file: &str) -> Result<Vec<Token>, ParseError> {
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
            loop {
                match bump(&mut chars) {
                    None => {
                        return Err(ParseError::new(
                            file,
                            tl,
                            tc,
                            "unterminated quoted string; add the closing '\"'",
                        ))
                    }
                    Some('"') => break,
                    Some('\\') => match bump(&mut chars) {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(other),
                        None => {
                            return Err(ParseError::new(
                                file,
                                tl,
                                tc,
                                "unterminated quoted string; add the closing '\"'",
                            ))
                        }
                    },
                    Some('\n') => {
                        return Err(ParseError::new(
                            file,
                            tl,
                            tc,
                            "newline inside a quoted string; close the string on the same line",
                        ))
                    }
                    Some(ch) => s.push(ch),
                }
            }
            out.push(Token {
                tok: Tok::Word {
                    text: s,
                    quoted: true,
                },
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_comments_and_positions() {
        let t = lex("a \"b \\\"c\\\"\" # x\n{ d; }[0]", "f").unwrap();
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
        assert!(lex("\"open", "f").is_err());
    }
}
