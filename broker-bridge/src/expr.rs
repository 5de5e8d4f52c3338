//! The `when` conditions of routes: a small expression language over the message's
//! fields, e.g. `severity >= 2 && state == "firing"` or `labels.site == "plant-3"`.
//!
//! Grammar: `||`, `&&`, `!`, parentheses, comparisons `== != > >= < <=` between field
//! paths (`a.b.c`) and literals (numbers, `"strings"` or `'strings'`, `true`, `false`,
//! `null`). A bare path is true when the field exists and is not `false`, `null`, `0` or
//! `""`. A missing field is `null`. Parsed once at start; evaluation cannot fail.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, Op, Operand),
    Truthy(Operand),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Path(Vec<String>),
    Lit(Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Expr {
    /// Parses `src`; the error says what was expected and at which character.
    pub fn parse(src: &str) -> Result<Expr, String> {
        let tokens = lex(src)?;
        let mut p = Parser { tokens, pos: 0 };
        let e = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(e),
            Some((at, t)) => Err(format!("unexpected {t:?} at character {at}")),
        }
    }

    pub fn eval(&self, fields: &Value) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(fields) || b.eval(fields),
            Expr::And(a, b) => a.eval(fields) && b.eval(fields),
            Expr::Not(a) => !a.eval(fields),
            Expr::Truthy(o) => truthy(o.resolve(fields)),
            Expr::Cmp(a, op, b) => compare(a.resolve(fields), *op, b.resolve(fields)),
        }
    }
}

impl Operand {
    fn resolve<'a>(&'a self, fields: &'a Value) -> &'a Value {
        match self {
            Operand::Lit(v) => v,
            Operand::Path(p) => lookup(fields, p).unwrap_or(&Value::Null),
        }
    }
}

/// Looks up `a.b.c` in nested JSON objects.
pub fn lookup<'a, S: AsRef<str>>(v: &'a Value, path: &[S]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k.as_ref()))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        // A number sent as a string still compares as a number.
        (Value::String(x), Value::Number(y)) => x
            .parse::<f64>()
            .ok()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (Value::Number(x), Value::String(y)) => x
            .as_f64()
            .zip(y.parse::<f64>().ok())
            .and_then(|(x, y)| x.partial_cmp(&y)),
        (x, y) if x == y => Some(Ordering::Equal),
        _ => None,
    };
    match op {
        Op::Eq => ord == Some(Ordering::Equal),
        Op::Ne => ord != Some(Ordering::Equal),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Op(Op),
    Path(Vec<String>),
    Lit(Value),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i;
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (tok, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            _ if two == "&&" => (Tok::And, 2),
            _ if two == "||" => (Tok::Or, 2),
            _ if two == "==" => (Tok::Op(Op::Eq), 2),
            _ if two == "!=" => (Tok::Op(Op::Ne), 2),
            _ if two == ">=" => (Tok::Op(Op::Ge), 2),
            _ if two == "<=" => (Tok::Op(Op::Le), 2),
            '!' => (Tok::Not, 1),
            '>' => (Tok::Op(Op::Gt), 1),
            '<' => (Tok::Op(Op::Lt), 1),
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&q| q == c)
                    .ok_or_else(|| format!("unterminated string starting at character {at}"))?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                (Tok::Lit(Value::String(s)), end + 2)
            }
            c if c.is_ascii_digit() || c == '-' => {
                let len = chars[i..]
                    .iter()
                    .position(|&d| {
                        !(d.is_ascii_digit() || matches!(d, '.' | '-' | 'e' | 'E' | '+'))
                    })
                    .unwrap_or(chars.len() - i);
                let s: String = chars[i..i + len].iter().collect();
                let n = s
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .ok_or_else(|| format!("bad number {s:?} at character {at}"))?;
                (Tok::Lit(Value::Number(n)), len)
            }
            c if c.is_alphanumeric() || c == '_' => {
                let len = chars[i..]
                    .iter()
                    .position(|&d| !(d.is_alphanumeric() || matches!(d, '_' | '.' | '-')))
                    .unwrap_or(chars.len() - i);
                let s: String = chars[i..i + len].iter().collect();
                let t = match s.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "null" => Tok::Lit(Value::Null),
                    _ => Tok::Path(s.split('.').map(str::to_owned).collect()),
                };
                (t, len)
            }
            _ => return Err(format!("unexpected {c:?} at character {at}")),
        };
        i += len;
        out.push((at, tok));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.expected("')'"));
            }
            self.pos += 1;
            return Ok(e);
        }
        let a = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let b = self.operand()?;
            return Ok(Expr::Cmp(a, op, b));
        }
        Ok(Expr::Truthy(a))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let o = match self.peek().cloned() {
            Some(Tok::Path(p)) => Operand::Path(p),
            Some(Tok::Lit(v)) => Operand::Lit(v),
            _ => return Err(self.expected("a field name or a value")),
        };
        self.pos += 1;
        Ok(o)
    }

    fn expected(&self, what: &str) -> String {
        match self.tokens.get(self.pos) {
            Some((at, t)) => format!("expected {what} at character {at}, found {t:?}"),
            None => format!("expected {what} at the end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(src: &str, v: &Value) -> bool {
        Expr::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(v)
    }

    #[test]
    fn compares_fields_with_literals() {
        let a =
            json!({"severity": 3, "state": "firing", "labels": {"site": "plant-3"}, "score": 2.5});
        assert!(eval("severity >= 2 && state == \"firing\"", &a));
        assert!(!eval("severity >= 4 || state == 'resolved'", &a));
        assert!(eval("labels.site == 'plant-3'", &a));
        assert!(eval("!(score < 2)", &a));
        assert!(eval("score > 2.4 && score <= 2.5 && severity != 1", &a));
        assert!(eval("missing == null && !missing", &a));
        assert!(eval("labels", &a));
    }

    #[test]
    fn numbers_sent_as_strings_still_compare_as_numbers() {
        assert!(eval("value > 10", &json!({"value": "12.5"})));
    }

    #[test]
    fn precedence_is_and_before_or() {
        let v = json!({"a": 1, "b": 0, "c": 1});
        assert!(eval("a == 1 || b == 1 && c == 0", &v));
        assert!(!eval("(a == 1 || b == 1) && c == 0", &v));
    }

    #[test]
    fn errors_say_where() {
        assert!(Expr::parse("severity >=").unwrap_err().contains("end"));
        assert!(Expr::parse("a == 'x").unwrap_err().contains("unterminated"));
        assert!(Expr::parse("a = 1").unwrap_err().contains("character"));
        assert!(Expr::parse("(a == 1").unwrap_err().contains("')'"));
    }
}
