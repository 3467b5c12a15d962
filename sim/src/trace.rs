//! The trace: one fixed-column line per event (virtual time, actor, object, what happened).

use crate::clock::format_ms;

/// One event of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Virtual time in ms since the start.
    pub at_ms: u64,
    /// Who acted: `runtime-ctl`, `kubelet/node-1`, `scheduler`, `scenario`, ….
    pub actor: String,
    /// The object acted on: `Dataset/default/jfsdemo`.
    pub object: String,
    /// What happened, in words.
    pub text: String,
}

/// The trace of a run. Disabled traces cost nothing (the benchmark runs without one).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Record lines at all.
    pub enabled: bool,
    /// The lines, in order.
    pub lines: Vec<TraceLine>,
}

/// Width of the actor column.
pub const ACTOR_WIDTH: usize = 18;
/// Width of the object column.
pub const OBJECT_WIDTH: usize = 46;

impl Trace {
    /// A trace that records when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, lines: Vec::new() }
    }

    /// Records one line.
    pub fn push(&mut self, at_ms: u64, actor: impl Into<String>, object: impl Into<String>, text: impl Into<String>) {
        if self.enabled {
            self.lines.push(TraceLine { at_ms, actor: actor.into(), object: object.into(), text: text.into() });
        }
    }

    /// The header and every line, fixed-column.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("{:>11}  {:<ACTOR_WIDTH$} {:<OBJECT_WIDTH$} {}\n", "time", "actor", "object", "event"));
        for line in &self.lines {
            out.push_str(&render_line(line));
            out.push('\n');
        }
        out
    }
}

/// One line, fixed-column (long objects push the text right rather than being cut).
pub fn render_line(line: &TraceLine) -> String {
    format!("{:>11}  {:<ACTOR_WIDTH$} {:<OBJECT_WIDTH$} {}", format_ms(line.at_ms), line.actor, line.object, line.text)
}

/// Records a trace line on a `Sim` only when tracing is on (the text is not even formatted otherwise).
#[macro_export]
macro_rules! trace {
    ($sim:expr, $actor:expr, $object:expr, $($fmt:tt)*) => {
        if $sim.trace.enabled {
            let at_ms = $sim.clock.now_ms();
            $sim.trace.push(at_ms, $actor, $object, format!($($fmt)*));
        }
    };
}
