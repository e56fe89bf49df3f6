//! Frames and call paths, kept structured (module, offset, function, file, line) until a
//! printer formats them: tables show a name, pprof wants `Location`/`Line`/`Mapping`, flame
//! graphs and HTML want the function and the source apart.

use std::{fmt, sync::Arc};

/// One frame of a call path: a return address, and what symbolization found for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The return address in the process; 0 where it is not known (frames read from
    /// snapshots older than format version 3).
    pub addr: u64,
    /// The file mapped at the address, by its file name (`libc.so.6`); `None` when the
    /// address was in no mapped file.
    pub module: Option<String>,
    /// The address's offset in that file.
    pub offset: u64,
    /// The function, where symbols name it (demangled).
    pub function: Option<String>,
    /// The address's offset from the start of the function's symbol.
    pub function_offset: u64,
    /// The source file, where debug info has it.
    pub file: Option<String>,
    /// The source line, where debug info has it.
    pub line: Option<u32>,
    /// The function was inlined into the code that holds the address (the function and
    /// line are the innermost inlined call's).
    pub inlined: bool,
}

impl Frame {
    /// A frame in no known module.
    pub fn unknown(addr: u64) -> Self {
        Frame {
            addr,
            ..Frame::default()
        }
    }

    /// The frame's name as tables show it, and as `--site` matches it:
    /// - `function (file:line)` where debug info has the line;
    /// - `function+0xOFF (module)` where only symbols name it;
    /// - `[unknown] (module+0xOFF)` in a module without a name for it;
    /// - `[unknown] (0xADDR)` outside every mapped file.
    pub fn name(&self) -> FrameName<'_> {
        FrameName(self)
    }

    /// The function's name, for grouping by function; for a frame no symbol names, its whole
    /// name (unknown code is never merged with other unknown code).
    pub fn function_name(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => self.name().to_string(),
        }
    }

    /// Reads back a name in one of the forms of [`Frame::name`], as snapshots before format
    /// version 3 stored frames. A name that fits no form is kept whole as the function, so
    /// that it shows as it was saved.
    pub fn from_name(name: &str) -> Frame {
        let parsed = parse_name(name).filter(|f| f.name().to_string() == name);
        parsed.unwrap_or_else(|| Frame {
            function: Some(name.to_string()),
            ..Frame::default()
        })
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn parse_name(name: &str) -> Option<Frame> {
    let (head, inner) = name.strip_suffix(')')?.rsplit_once(" (")?;
    if head == "[unknown]" {
        if let Some(addr) = hex(inner) {
            return Some(Frame::unknown(addr));
        }
        let (module, off) = inner.rsplit_once('+')?;
        return Some(Frame {
            module: Some(module.to_string()),
            offset: hex(off)?,
            ..Frame::default()
        });
    }
    if let Some((file, line)) = inner.rsplit_once(':')
        && let Ok(line) = line.parse()
    {
        return Some(Frame {
            function: Some(head.to_string()),
            file: Some(file.to_string()),
            line: Some(line),
            ..Frame::default()
        });
    }
    let (function, off) = head.rsplit_once('+')?;
    Some(Frame {
        module: Some(inner.to_string()),
        function: Some(function.to_string()),
        function_offset: hex(off)?,
        ..Frame::default()
    })
}

/// [`Frame::name`]'s display.
pub struct FrameName<'a>(&'a Frame);

impl fmt::Display for FrameName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.0;
        match (&fr.function, &fr.file, fr.line, &fr.module) {
            (Some(func), Some(file), Some(line), _) => write!(f, "{func} ({file}:{line})"),
            (Some(func), _, _, Some(module)) => {
                write!(f, "{func}+{:#x} ({module})", fr.function_offset)
            }
            (Some(func), _, _, None) => f.write_str(func),
            (None, _, _, Some(module)) => write!(f, "[unknown] ({module}+{:#x})", fr.offset),
            (None, _, _, None) => write!(f, "[unknown] ({:#x})", fr.addr),
        }
    }
}

/// Whether a call path has the frames above its site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackState {
    /// Stack collection was off: the path is the site alone.
    Off,
    /// The stack could not be stored or sent: the path is the site alone, and the summary's
    /// `lost_stacks` counts it.
    Lost,
    /// Every frame up to the outermost one.
    Walked,
    /// The frames up to where the walk had to stop, for the reason given: the path is true
    /// as far as it goes, and says that it goes no further.
    Cut(Cut),
}

/// Why a stack walk stopped before the outermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cut {
    /// The stack was deeper than the bytes copied at the allocation (`--stack-bytes`): the
    /// innermost frames are kept.
    Copy,
    /// The walk reached its frame limit.
    Depth,
    /// The next frame is a signal handler's return into the kernel's signal frame.
    Signal,
    /// The next return address is the kernel's uretprobe trampoline (`[uprobes]`), which
    /// stands in for a probed function's real return address.
    Trampoline,
    /// The next frame is in code with no unwind information (no `.eh_frame` entry, or no
    /// file: generated code).
    NoCfi,
}

impl StackState {
    /// What a printed stack shows after its frames: why it ends there, for every stack that
    /// is not whole (so that a cut or missing stack never passes for a short one).
    pub fn marker(self) -> Option<&'static str> {
        match self {
            StackState::Off | StackState::Walked => None,
            StackState::Lost => Some(LOST_STACK),
            StackState::Cut(Cut::Copy) => Some("[stack deeper than the copy]"),
            StackState::Cut(Cut::Depth) => Some("[frame limit reached]"),
            StackState::Cut(Cut::Signal) => Some("[signal frame]"),
            StackState::Cut(Cut::Trampoline) => Some("[uprobes trampoline]"),
            StackState::Cut(Cut::NoCfi) => Some("[no unwind info]"),
        }
    }
}

/// Stands in for the frames above the site when the stack was lost.
pub const LOST_STACK: &str = "[stack lost]";

/// A symbolized call path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Trace {
    /// Innermost first; `frames[0]` is the allocation site (never empty). Shared: a long run
    /// sees many paths through the same few frames.
    pub frames: Vec<Arc<Frame>>,
    /// Whether the frames above the site are there.
    pub state: StackState,
}

impl Trace {
    /// A path of `frames`, innermost first (not empty).
    pub fn new(frames: Vec<Frame>, state: StackState) -> Self {
        Trace {
            frames: frames.into_iter().map(Arc::new).collect(),
            state,
        }
    }

    /// The frames as values of their own, for a row that outlives the trace.
    pub fn owned_frames(&self) -> Vec<Frame> {
        self.frames.iter().map(|f| Frame::clone(f)).collect()
    }

    /// The allocation site.
    pub fn site(&self) -> &Frame {
        &self.frames[0]
    }

    /// The frames' names, with the state's [`StackState::marker`] after them where the stack
    /// is not whole, so that a missing or cut stack never passes for a short one.
    pub fn stack_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.frames.iter().map(|f| f.name().to_string()).collect();
        v.extend(self.state.marker().map(str::to_string));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_the_documented_forms() {
        let line = Frame {
            addr: 0x5555_0000_1234,
            module: Some("prog".into()),
            offset: 0x1234,
            function: Some("leak".into()),
            function_offset: 0x1b,
            file: Some("leaky.c".into()),
            line: Some(13),
            inlined: false,
        };
        assert_eq!(line.name().to_string(), "leak (leaky.c:13)");
        let sym = Frame {
            file: None,
            line: None,
            ..line.clone()
        };
        assert_eq!(sym.name().to_string(), "leak+0x1b (prog)");
        let bare = Frame {
            function: None,
            ..sym.clone()
        };
        assert_eq!(bare.name().to_string(), "[unknown] (prog+0x1234)");
        assert_eq!(bare.function_name(), "[unknown] (prog+0x1234)");
        assert_eq!(
            Frame::unknown(0x7f00).name().to_string(),
            "[unknown] (0x7f00)"
        );
    }

    #[test]
    fn names_read_back_into_their_parts() {
        for name in [
            "leak (leaky.c:13)",
            "std::vector<int, std::allocator<int> >::push_back(int const&) (/usr/include/c++/12/bits/stl_vector.h:1287)",
            "PyBytes_FromStringAndSize+0x1cb (python3.11)",
            "[unknown] (libc.so.6+0x9a0b1)",
            "[unknown] (0x7f12345678)",
            "a name of no form (x",
        ] {
            assert_eq!(Frame::from_name(name).name().to_string(), name);
        }
        let f = Frame::from_name("operator()(int) (a.cc:7)");
        assert_eq!(f.function.as_deref(), Some("operator()(int)"));
        assert_eq!((f.file.as_deref(), f.line), (Some("a.cc"), Some(7)));
        let f = Frame::from_name("PyBytes_FromStringAndSize+0x1cb (python3.11)");
        assert_eq!(f.module.as_deref(), Some("python3.11"));
        assert_eq!(f.function_offset, 0x1cb);
    }
}
