//! Error text for people: an error and its sources as one line, the form every message the agent
//! prints or reports takes (gix, reqwest and rustls errors nest several layers deep).

/// Renders an error and its sources as one line, skipping repeated messages.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Outer);

    #[test]
    fn sources_are_joined_once_each() {
        assert_eq!(error_chain(&Wrapper(Outer(Inner))), "wrapper: outer: inner");
    }
}
