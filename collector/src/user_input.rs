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

/// The longest word an error message prints whole. A longer one is user
/// input that no check quoted (clap's "invalid value", a path, a line of the
/// config file that TOML quotes).
const WORD_MAX_CHARS: usize = 256;

/// `message` with every word longer than [`WORD_MAX_CHARS`] cut like
/// [`quote`] cuts: the last guard before an error reaches the terminal.
pub fn shorten_long_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4096));
    let mut rest = message;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(word_end);
        let chars = word.chars().count();
        if chars <= WORD_MAX_CHARS {
            out.push_str(word);
        } else {
            out.extend(word.chars().take(QUOTE_MAX_CHARS));
            out.push('…');
            // A closing quote stays: `'abc…' (N characters)`, as `quote` writes.
            if let Some(q) = word
                .chars()
                .last()
                .filter(|c| matches!(c, '\'' | '"' | '`'))
            {
                out.push(q);
            }
            out.push_str(&format!(" ({chars} characters)"));
        }
        let space_end = tail
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(tail.len());
        out.push_str(&tail[..space_end]);
        rest = &tail[space_end..];
    }
    out
}

/// Whether `s` is at most `max` bytes (names InfluxDB and the records carry).
pub fn check_len(s: &str, max: usize) -> Result<(), String> {
    if s.len() <= max {
        Ok(())
    } else {
        Err(format!(
            "{} is longer than {max} bytes ({} bytes)",
            quote(s),
            s.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_are_cut_and_the_rest_kept() {
        let long = "b".repeat(100_000);
        let msg =
            format!("error: invalid value '{long}' for '--top <N>'\n\nFor more, try '--help'.\n");
        let short = shorten_long_words(&msg);
        assert!(short.len() < 200, "{short}");
        assert!(short.starts_with("error: invalid value 'bbbb"), "{short}");
        assert!(
            short.contains("…' (100002 characters) for '--top <N>'\n\nFor more, try '--help'.\n"),
            "{short}"
        );
        let ok = "a  message\twith 'short' words\n";
        assert_eq!(shorten_long_words(ok), ok);
        assert_eq!(shorten_long_words(""), "");
    }

    #[test]
    fn lengths_are_checked_in_bytes() {
        assert_eq!(check_len("flowlens", 255), Ok(()));
        let e = check_len(&"é".repeat(200), 255).expect_err("400 bytes");
        assert!(e.ends_with("is longer than 255 bytes (400 bytes)"), "{e}");
        assert!(e.len() < 250, "{e}");
    }

    #[test]
    fn long_input_is_cut() {
        assert_eq!(quote("eth0"), "'eth0'");
        let q = quote(&"x".repeat(100_000));
        assert!(q.len() < 100 && q.ends_with("(100000 characters)"), "{q}");
    }
}
