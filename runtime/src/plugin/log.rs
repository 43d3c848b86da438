//! The plugin's log, as the host writes it: every line attributed to the plugin, at most
//! [`LINE_AT_MOST`] characters, control characters escaped so that no message can forge a line
//! of the host's own, and at most [`PER_SECOND`] lines a second per instance (with a burst of
//! as many), the lines dropped beyond that counted and said.

use std::fmt::Write;
use std::time::Instant;

use super::guard::shortened;

/// Characters of one message kept.
pub(super) const LINE_AT_MOST: usize = 1_000;
/// Lines per second one instance may log, on average.
pub(super) const PER_SECOND: u32 = 100;
/// How often the host may say that lines are being dropped.
const SAY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A token bucket over an instance's log lines.
#[derive(Debug)]
pub(super) struct LogGate {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    /// When dropping was last said (started or counted): at most once a second, so that the
    /// host's own lines about the flood do not flood.
    said: Option<Instant>,
}

impl LogGate {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            tokens: f64::from(PER_SECOND),
            refilled: now,
            dropped: 0,
            said: None,
        }
    }

    /// Whether a line may be written now.
    pub(super) fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let burst = f64::from(PER_SECOND);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * burst).min(burst);
        let may_say = self
            .said
            .is_none_or(|at| now.saturating_duration_since(at) >= SAY_EVERY);
        if self.tokens < 1.0 {
            self.dropped += 1;
            if self.dropped == 1 && may_say {
                self.said = Some(now);
                return Admit::FirstDropped;
            }
            return Admit::Dropped;
        }
        self.tokens -= 1.0;
        if self.dropped > 0 && may_say {
            self.said = Some(now);
            return Admit::Write {
                dropped: std::mem::take(&mut self.dropped),
            };
        }
        Admit::Write { dropped: 0 }
    }
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Write it; `dropped` lines were dropped since the last one written.
    Write {
        dropped: u64,
    },
    /// Drop it, and say that dropping starts.
    FirstDropped,
    Dropped,
}

/// Characters that could break a line or reorder what a reader sees: control characters, the
/// Unicode line and paragraph separators, and the bidirectional overrides and isolates.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The message as one safe line: those characters escaped, cut to [`LINE_AT_MOST`] characters
/// after escaping.
pub(super) fn one_line(message: &str) -> String {
    let kept = shortened(message, LINE_AT_MOST);
    if !kept.chars().any(unsafe_char) {
        return kept;
    }
    let mut line = String::with_capacity(kept.len() + 8);
    for c in kept.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(line, "\\u{{{:x}}}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    shortened(&line, LINE_AT_MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_rate_and_the_drops_are_counted() {
        let start = Instant::now();
        let mut gate = LogGate::new(start);
        let said: Vec<Admit> = (0..10_000).map(|_| gate.admit(start)).collect();
        let written = said
            .iter()
            .filter(|a| matches!(a, Admit::Write { .. }))
            .count();
        assert_eq!(written, PER_SECOND as usize, "the burst, then nothing");
        assert_eq!(
            said[PER_SECOND as usize],
            Admit::FirstDropped,
            "said at once"
        );
        assert_eq!(said[PER_SECOND as usize + 1], Admit::Dropped);
        // A full second refills the whole burst.
        let later = start + std::time::Duration::from_secs(1);
        assert_eq!(
            gate.admit(later),
            Admit::Write {
                dropped: 10_000 - u64::from(PER_SECOND)
            }
        );
        assert_eq!(
            gate.admit(later),
            Admit::Write { dropped: 0 },
            "counted once"
        );
        // A steady flood: the drops are said at most once a second, not with every line.
        let mut said = 0;
        for ms in 0..3_000u64 {
            let now = later + std::time::Duration::from_millis(ms);
            for _ in 0..10 {
                match gate.admit(now) {
                    Admit::FirstDropped | Admit::Write { dropped: 1.. } => said += 1,
                    _ => {}
                }
            }
        }
        assert!(said <= 4, "said {said} times in 3 s");
    }

    #[test]
    fn a_message_cannot_forge_a_line_or_run_on() {
        let forged = "done\n2026-12-02T00:00:00Z  INFO streaminfer: all records committed\r";
        let line = one_line(forged);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(line.contains("done\\n2026"), "{line}");
        assert_eq!(one_line("bell\u{7}"), "bell\\u{7}");
        assert_eq!(one_line("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
        let escaped = one_line(&"\u{7}".repeat(2_000));
        assert!(
            escaped.chars().count() < LINE_AT_MOST + 40,
            "cut after escaping"
        );
        let long = one_line(&"x".repeat(110_000_000 / 1000));
        assert!(long.len() < LINE_AT_MOST + 40, "{}", long.len());
        assert!(long.ends_with("bytes cut)"));
    }
}
