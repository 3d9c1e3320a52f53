//! User input in messages: quoted, and cut short, so an error never echoes
//! a 100,000-character argument in full.

/// The longest piece of user input an error message quotes.
const QUOTE_MAX_CHARS: usize = 64;

/// `s` in quotes, cut after [`QUOTE_MAX_CHARS`] characters (a message must
/// not echo a 100,000-character argument).
pub fn quote(s: &str) -> String {
    let chars = s.chars().count();
    if chars <= QUOTE_MAX_CHARS {
        format!("'{s}'")
    } else {
        let head: String = s.chars().take(QUOTE_MAX_CHARS).collect();
        format!("'{head}…' ({chars} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut() {
        assert_eq!(quote("eth0"), "'eth0'");
        let q = quote(&"x".repeat(100_000));
        assert!(q.len() < 100 && q.ends_with("(100000 characters)"), "{q}");
    }
}
