//! `Transcript`: what an operator saw from a series of `shoal-agent` runs (command, exit code,
//! stdout, stderr), with what differs from run to run (commit ids, temp paths, keys) named
//! instead, ready to compare against a snapshot.

use std::fmt::Write as _;

use crate::device::Run;

/// Commands and their output, in order, with known volatile values replaced by names.
#[derive(Default)]
pub struct Transcript {
    names: Vec<(String, String)>,
    text: String,
}

impl Transcript {
    pub fn new() -> Transcript {
        Transcript::default()
    }

    /// From now on, `value` (a commit id, a temp dir) reads `[name]`. Longer values are
    /// replaced first, so a directory inside a named one keeps its own name.
    pub fn name(&mut self, value: impl AsRef<str>, name: &str) -> &mut Self {
        self.names
            .push((value.as_ref().to_owned(), format!("[{name}]")));
        self.names
            .sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        self
    }

    /// Records `shoal-agent ARGS` and what it answered. JSON on stdout is shown pretty-printed
    /// with sorted keys, so a snapshot diff points at the field that changed.
    pub fn record(&mut self, args: &[&str], run: &Run) -> &mut Self {
        let stdout = match serde_json::from_str::<serde_json::Value>(&run.stdout) {
            Ok(json) if !run.stdout.trim().is_empty() => {
                serde_json::to_string_pretty(&json).expect("a JSON value prints") + "\n"
            }
            _ => run.stdout.clone(),
        };
        let _ = write!(
            self.text,
            "$ shoal-agent {}\nexit {}\n",
            args.join(" "),
            run.code
        );
        for (stream, text) in [("stdout", &stdout), ("stderr", &run.stderr)] {
            if !text.is_empty() {
                let _ = write!(self.text, "--- {stream}\n{}", text);
                if !text.ends_with('\n') {
                    self.text.push('\n');
                }
            }
        }
        self.text.push('\n');
        self
    }

    /// The transcript so far, named values replaced.
    pub fn text(&self) -> String {
        let mut text = self.text.clone();
        for (value, name) in &self.names {
            text = text.replace(value.as_str(), name);
        }
        text
    }
}
