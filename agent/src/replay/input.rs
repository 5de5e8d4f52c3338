//! Reading replay's input: one CSV line at a time into one reused buffer, with the field
//! delimiter (`--delimiter`) and the named columns that are not model dimensions
//! (`--ignore-columns`, for label columns) that [`Format`] gives.
//!
//! The first field of a line is its timestamp; the others are values. A first line whose
//! values are not all numbers is the header: it names the columns, and its width is every
//! row's. Ignored columns are found by name in the header (so `--ignore-columns` needs
//! one) and never parsed: a label column may hold anything.

use std::io::{BufRead, BufReader, Read};

/// How the input is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// The field delimiter (`--delimiter`, default `,`).
    pub delimiter: char,
    /// Columns named in the header that are not model dimensions (`--ignore-columns`).
    pub ignore: Vec<String>,
    /// Pass over malformed rows instead of ending the replay (`--skip-bad-rows`).
    pub skip_bad_rows: bool,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            delimiter: ',',
            ignore: Vec::new(),
            skip_bad_rows: false,
        }
    }
}

impl Format {
    /// `--delimiter`: one character (`\t` or `tab` for a tab). Characters that are part
    /// of numbers or lines (digits, letters, `.`, `-`, `+`, quotes, line ends) are refused.
    pub fn parse_delimiter(s: &str) -> Result<char, String> {
        let c = match s {
            "\\t" | "tab" | "TAB" => '\t',
            _ => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ => return Err(format!("{s:?}: the delimiter is one character")),
                }
            }
        };
        if c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '"' | '\'' | '\n' | '\r') {
            return Err(format!(
                "{c:?} cannot separate fields: it is part of numbers, quotes or line ends"
            ));
        }
        Ok(c)
    }

    /// `--ignore-columns`: every name must be non-empty.
    pub fn check_ignore(names: &[String]) -> Result<(), String> {
        match names.iter().find(|n| n.trim().is_empty()) {
            Some(_) => Err(format!(
                "--ignore-columns {}: an empty column name",
                names.join(",")
            )),
            None => Ok(()),
        }
    }
}

/// What one input line is.
pub(super) enum Line<'a> {
    /// Blank, or the header.
    Skip,
    Row {
        ts: &'a str,
        values: &'a [f64],
    },
    /// Malformed line number `line`; `ts` when the line has one.
    Bad {
        line: u64,
        ts: Option<&'a str>,
        message: String,
    },
    /// The header does not fit the [`Format`] (an ignored column it does not have): a
    /// bad argument, not bad data; the replay ends whatever `skip_bad_rows` says.
    Unfit(String),
}

/// Reads the CSV a line at a time into one reused buffer.
pub(super) struct LineReader {
    delimiter: char,
    ignore: Vec<String>,
    line: Vec<u8>,
    values: Vec<f64>,
    pub(super) line_no: u64,
    pub(super) bytes: u64,
    rows: u64,
    /// Value columns: the header's or the first row's; every row must have as many.
    width: Option<usize>,
    /// The header's value column names (empty without a header).
    names: Vec<String>,
    /// Per value column, whether it is ignored (empty: none is).
    skip: Vec<bool>,
}

impl LineReader {
    pub(super) fn new(format: &Format) -> Self {
        Self {
            delimiter: format.delimiter,
            ignore: format.ignore.clone(),
            line: Vec::new(),
            values: Vec::new(),
            line_no: 0,
            bytes: 0,
            rows: 0,
            width: None,
            names: Vec::new(),
            skip: Vec::new(),
        }
    }

    pub(super) fn next<R: Read>(
        &mut self,
        input: &mut BufReader<R>,
    ) -> std::io::Result<Option<Line<'_>>> {
        self.line.clear();
        let n = input.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        self.bytes += n as u64;
        self.line_no += 1;
        let line = self.line_no;
        let Ok(text) = std::str::from_utf8(&self.line) else {
            return Ok(Some(Line::Bad {
                line,
                ts: None,
                message: "not UTF-8".into(),
            }));
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return Ok(Some(Line::Skip));
        }
        let d = self.delimiter;
        let Some((ts, rest)) = text.split_once(d) else {
            return Ok(Some(Line::Bad {
                line,
                ts: None,
                message: no_delimiter(text, d),
            }));
        };
        let first = self.width.is_none() && self.rows == 0;
        if first && (!self.ignore.is_empty() || !all_numbers(rest, d)) {
            // The header: it names the columns; its width is the model's.
            let names: Vec<String> = rest.split(d).map(column_name).collect();
            self.width = Some(names.len());
            let skip = ignored(&self.ignore, ts, &names, rest, d, line);
            self.names = names;
            return Ok(Some(match skip {
                Ok(skip) => {
                    self.skip = skip;
                    Line::Skip
                }
                Err(message) => Line::Unfit(message),
            }));
        }
        self.values.clear();
        let mut width = 0;
        for (i, field) in rest.split(d).enumerate() {
            width += 1;
            if self.skip.get(i) == Some(&true) {
                continue;
            }
            let Ok(v) = field.trim().parse::<f64>() else {
                let message = self.not_a_number(i, field, text);
                return Ok(Some(Line::Bad {
                    line,
                    ts: Some(ts),
                    message,
                }));
            };
            self.values.push(v);
        }
        let expected = *self.width.get_or_insert(width);
        if width != expected {
            return Ok(Some(Line::Bad {
                line,
                ts: Some(ts),
                message: format!("{width} value columns where the header/first row has {expected}"),
            }));
        }
        self.rows += 1;
        Ok(Some(Line::Row {
            ts,
            values: &self.values,
        }))
    }

    /// The message for value column `i` holding `field`, which is not a number.
    fn not_a_number(&self, i: usize, field: &str, text: &str) -> String {
        let column = match self.names.get(i) {
            Some(name) => format!("column {name:?}"),
            None => format!("value column {}", i + 1),
        };
        let hint = if self.delimiter != ',' && field.contains(',') {
            " (decimal commas are not read: write 0.5, not 0,5)"
        } else if field.chars().any(char::is_alphabetic) {
            " (a label column? --ignore-columns NAME skips it)"
        } else {
            ""
        };
        format!("{column}: {field:?} is not a number{hint}, in {text:?}")
    }
}

/// Per value column of a header (`ts`, then `names`, read from `rest` at `line`), whether
/// `ignore` names it; the message when a name is not there or nothing would be left.
fn ignored(
    ignore: &[String],
    ts: &str,
    names: &[String],
    rest: &str,
    delimiter: char,
    line: u64,
) -> Result<Vec<bool>, String> {
    if ignore.is_empty() {
        return Ok(Vec::new());
    }
    let list = ignore.join(",");
    if all_numbers(rest, delimiter) {
        return Err(format!(
            "--ignore-columns {list}: needs a header row naming the columns; line {line} is a row of numbers"
        ));
    }
    let mut skip = vec![false; names.len()];
    for want in ignore.iter().map(|w| w.trim()) {
        if column_name(ts) == want {
            return Err(format!(
                "--ignore-columns {want}: that is the timestamp column (the first), which is never a dimension"
            ));
        }
        let mut found = false;
        for (name, skip) in names.iter().zip(skip.iter_mut()) {
            if name == want {
                *skip = true;
                found = true;
            }
        }
        if !found {
            let columns: Vec<String> = std::iter::once(column_name(ts))
                .chain(names.iter().cloned())
                .collect();
            return Err(format!(
                "--ignore-columns {want}: no such column; the header (delimiter {delimiter:?}) has {}",
                columns.join(", ")
            ));
        }
    }
    if skip.iter().all(|s| *s) {
        return Err(format!(
            "--ignore-columns {list}: no value column is left for the model"
        ));
    }
    Ok(skip)
}

/// Every field of `rest` is a number.
fn all_numbers(rest: &str, delimiter: char) -> bool {
    rest.split(delimiter)
        .all(|f| f.trim().parse::<f64>().is_ok())
}

/// A header field as a name: trimmed, without surrounding double quotes.
fn column_name(field: &str) -> String {
    let f = field.trim();
    f.strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or(f)
        .to_owned()
}

/// The message for a line without the delimiter, with a hint when another one is there.
fn no_delimiter(text: &str, d: char) -> String {
    let other = [',', ';', '\t', '|']
        .into_iter()
        .find(|c| *c != d && text.contains(*c));
    let hint = match other {
        Some(c) => format!(" (separated by {c:?}? --delimiter {c:?})"),
        None => String::new(),
    };
    format!("expected timestamp{d}value[{d}value...], got {text:?}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `text` as the reader sees it: rows as `ts=v|v`, bad lines as `bad:N`.
    fn read(text: &str, format: &Format) -> Vec<String> {
        let mut input = BufReader::new(text.as_bytes());
        let mut r = LineReader::new(format);
        let mut out = Vec::new();
        while let Some(line) = r.next(&mut input).unwrap() {
            out.push(match line {
                Line::Skip => "skip".to_owned(),
                Line::Row { ts, values } => format!(
                    "{ts}={}",
                    values
                        .iter()
                        .map(f64::to_string)
                        .collect::<Vec<_>>()
                        .join("|")
                ),
                Line::Bad { line, message, .. } => format!("bad:{line}: {message}"),
                Line::Unfit(message) => format!("unfit: {message}"),
            });
        }
        out
    }

    fn format(delimiter: char, ignore: &[&str]) -> Format {
        Format {
            delimiter,
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            skip_bad_rows: false,
        }
    }

    #[test]
    fn a_semicolon_separated_file_reads_with_its_delimiter() {
        let text = "datetime;a;b\n2020-03-09 10:14:33;0.5;230\n2020-03-09 10:14:34;0.6;231\n";
        assert_eq!(
            read(text, &format(';', &[])),
            [
                "skip",
                "2020-03-09 10:14:33=0.5|230",
                "2020-03-09 10:14:34=0.6|231"
            ]
        );
        let got = read(text, &Format::default());
        assert!(
            got[0].starts_with("bad:1: expected timestamp,value")
                && got[0].contains("--delimiter ';'"),
            "the comma default names the delimiter it sees: {got:?}"
        );
    }

    #[test]
    fn ignored_columns_are_not_parsed_and_not_dimensions() {
        let text = "ts;a;label;b;changepoint\n1;0.5;normal;7;0\n2;0.6;fault;8;1\n";
        assert_eq!(
            read(text, &format(';', &["label", "changepoint"])),
            ["skip", "1=0.5|7", "2=0.6|8"]
        );
        // Quoted header names match unquoted.
        let quoted = "\"ts\",\"a\",\"label\"\n1,2,0\n";
        assert_eq!(read(quoted, &format(',', &["label"])), ["skip", "1=2"]);
    }

    #[test]
    fn an_ignored_column_the_header_lacks_is_named_with_the_columns_there_are() {
        let got = read("ts,a,label\n1,2,0\n", &format(',', &["lable"]));
        assert_eq!(got.len(), 2);
        assert!(
            got[0].starts_with("unfit: --ignore-columns lable: no such column")
                && got[0].contains("ts, a, label"),
            "{got:?}"
        );
        let got = read("ts,a,label\n", &format(',', &["ts"]));
        assert!(got[0].contains("timestamp column"), "{got:?}");
        let got = read("ts,label\n", &format(',', &["label"]));
        assert!(got[0].contains("no value column is left"), "{got:?}");
        let got = read("1,2,0\n", &format(',', &["label"]));
        assert!(got[0].contains("needs a header row"), "{got:?}");
    }

    #[test]
    fn a_text_value_names_its_column() {
        let got = read("ts,a,label\n1,2,normal\n", &Format::default());
        assert!(
            got[1].starts_with("bad:2: column \"label\": \"normal\" is not a number")
                && got[1].contains("--ignore-columns"),
            "{got:?}"
        );
        let got = read("ts;a\n1;0,5\n", &format(';', &[]));
        assert!(got[1].contains("decimal commas"), "{got:?}");
    }

    #[test]
    fn delimiters_are_one_character_that_is_not_part_of_a_number() {
        assert_eq!(Format::parse_delimiter(";"), Ok(';'));
        assert_eq!(Format::parse_delimiter("\\t"), Ok('\t'));
        assert_eq!(Format::parse_delimiter("|"), Ok('|'));
        for bad in ["", ";;", ".", "-", "e", "7", "\""] {
            assert!(Format::parse_delimiter(bad).is_err(), "{bad:?}");
        }
        assert!(Format::check_ignore(&["a".into(), " ".into()]).is_err());
        assert!(Format::check_ignore(&["a".into()]).is_ok());
    }
}
