//! Host-name globs for a rule's `deviceId`: `*` is any run of characters (none included),
//! `?` exactly one character, everything else itself. No classes, no escapes: host names
//! have no use for them, and a matcher this small needs no crate.

/// Whether `text` matches `pattern` as a whole. Remembers only the last `*`, so it runs
/// in linear time on ordinary patterns and never recurses on input.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (mut p, mut t) = (pattern, text);
    // Where the pattern continues after the last `*`, and the text that `*` has not yet
    // swallowed.
    let mut star: Option<(&str, &str)> = None;
    loop {
        let mut pc = p.chars();
        let mut tc = t.chars();
        match (pc.next(), tc.next()) {
            (Some('*'), _) => {
                p = pc.as_str();
                star = Some((p, t));
                continue;
            }
            (Some(a), Some(b)) if a == '?' || a == b => {
                p = pc.as_str();
                t = tc.as_str();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry from there.
        let Some((after_star, swallowed)) = star else {
            return false;
        };
        let mut rest = swallowed.chars();
        if rest.next().is_none() {
            return false;
        }
        star = Some((after_star, rest.as_str()));
        p = after_star;
        t = rest.as_str();
    }
}

/// Whether a `deviceId` is a glob rather than one host's name.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(matches("edge-*", "edge-"));
        assert!(matches("edge-*", "edge-42"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("*-42", "edge-42"));
        assert!(matches("e*g*-4*", "edge-42"));
        assert!(!matches("edge-*", "edg"));
        assert!(!matches("edge-*", "core-1"));
        assert!(!matches("*-42", "edge-420"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("sim-?", "sim-1"));
        assert!(!matches("sim-?", "sim-"));
        assert!(!matches("sim-?", "sim-12"));
        assert!(matches("sim-??", "sim-12"));
        assert!(matches("n?de-é", "node-é"));
        assert!(matches("?", "é"), "one character, not one byte");
    }

    #[test]
    fn everything_else_is_literal_and_case_sensitive() {
        assert!(matches("978648", "978648"));
        assert!(!matches("978648", "9786480"));
        assert!(!matches("Edge-*", "edge-1"));
        assert!(matches("a.b[1]", "a.b[1]"));
        assert!(!matches("a.b", "axb"));
    }

    #[test]
    fn backtracks_past_an_early_partial_match() {
        assert!(matches("*ab", "aaab"));
        assert!(matches("a*b*c", "abbbxbc"));
        assert!(!matches("a*b*c", "abbbxb"));
        let long = "a".repeat(10_000);
        assert!(
            !matches("*a*a*a*b", &long),
            "finishes on a pathological case"
        );
    }
}
