//! An error and its causes as one line, each cause once: what the binaries print at their edge
//! (`sluice: …`, `sluice-worker: …`) instead of a multi-line report that repeats a cause its
//! parent's message already carries.

/// `error: cause: cause`, skipping a cause whose text an earlier part already contains, with
/// newlines flattened.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("Redis unreachable at redis://h:1: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_its_parents_message_is_printed_once() {
        let e = Outer(std::io::Error::other("Connection refused"));
        assert_eq!(
            one_line(&e),
            "Redis unreachable at redis://h:1: Connection refused"
        );
    }

    #[test]
    fn distinct_causes_are_joined_and_newlines_flattened() {
        #[derive(Debug, thiserror::Error)]
        #[error("config\nfile")]
        struct Top(#[source] std::io::Error);
        let e = Top(std::io::Error::other("denied"));
        assert_eq!(one_line(&e), "config file: denied");
    }
}
