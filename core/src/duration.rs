//! Durations as operators write them in `agent.toml` and `shoal.toml`: a whole number and a unit
//! (`500ms`, `30s`, `5m`, `1h`, `7d`).

use std::time::Duration;

/// Parses `30s`, `500ms`, `5m`, `1h` or `7d`; the error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number and a unit, like \"30s\"")
    })?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be one of ms, s, m, h, d"
            ))
        }
    };
    Ok(Duration::from_millis(value.saturating_mul(unit_ms)))
}
