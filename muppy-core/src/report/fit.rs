//! Names fitted to a width. A C++ site can be hundreds of characters long
//! (`llvm::DenseMapBase<llvm::DenseMap<…>, …>::grow(unsigned int)+0x69 (libLLVM.so.18.1)`), and a
//! table pads every row to its longest name; like heaptrack_print, perf report and memray, the
//! text printer shortens such a name where it says least. A frame's name is its function and
//! a tail, ` (file:line)` or `+0xOFF (module)` ([`Frame::name`]); until the name fits:
//!
//! 1. the function's argument lists collapse, one at a time, to `<…>` (template arguments) or
//!    `(…)` (parameters): the most deeply nested first, then the longest, then the rightmost.
//!    A list collapses only where it follows a name, so `operator<<`, `operator()`,
//!    `operator->`, `(anonymous namespace)`, `<lambda()>`, and Rust's `<impl Foo for Bar>` and
//!    `<T as Trait>` stay whole (lists inside them still collapse); a name whose brackets do
//!    not pair is left as it is;
//! 2. if the collapsed function and the whole tail still do not fit: a module stays whole (it
//!    says which library) while the function can give way, down to 10 columns, and then keeps
//!    its stem (`librustc_driver…cf.so`); a file gives way first,
//!    the function keeping what its short form (`…/basename`) leaves, and at least three
//!    fifths of the room, or all it needs if less, the file keeping as many trailing
//!    directories as fit after `…` (`…/task/harness.rs`, at least `…/harness.rs`). The line
//!    (`:88`) and the offset (`+0x69`) are never cut;
//! 3. the middle of the function is cut to `…`: it keeps as many whole trailing `::`
//!    components as fit in half its room, at least the last one (for Rust's
//!    `<impl Debug for a::Foo<…>>::fmt`, `Foo<…>>::fmt`), and its start in the rest
//!    (`llvm::Dens…::grow(…)`); with too little room for a start, `…::grow(…)`; with too
//!    little for the last component, the end (`…operator<< <…>(…)`); a name without `::` (a C
//!    function, a process state) keeps its two ends.
//!
//! Widths are counted in `char`s (names are ASCII but for the `…` this module adds, one
//! column wide). No name is fitted to fewer than [`MIN_NAME_WIDTH`] columns, no function to
//! fewer than 10: where a table or tree leaves less, its lines overflow. JSON never goes
//! through this module.

use crate::model::Frame;

/// The fewest columns a name is shortened to; a table or tree with less room overflows.
pub const MIN_NAME_WIDTH: usize = 20;

/// The fewest columns a function is cut to when its module or file cannot give way enough.
const MIN_FUNCTION: usize = 10;

/// The fewest characters a shortened source file keeps (`…/config.rs`, `…c_from_iter.rs`).
const MIN_PATH: usize = 16;

/// The fewest characters kept before a `…` that keeps the last `::` component.
const MIN_HEAD: usize = 4;

/// What stands for the characters left out.
const ELLIPSIS: char = '…';

/// A name a printer may shorten: a frame's, kept structured, or plain text (a function's name,
/// a process's state).
#[derive(Clone, Debug)]
pub enum Name<'a> {
    /// A frame: shown as [`Frame::name`], shortened by [`fit_frame`].
    Frame(&'a Frame),
    /// Text: shortened by [`fit_function`].
    Text(String),
}

impl Name<'_> {
    /// The name in full.
    pub fn full(&self) -> String {
        match self {
            Name::Frame(f) => f.name().to_string(),
            Name::Text(t) => t.clone(),
        }
    }

    /// The name in `width` columns where it can be (never fewer than [`MIN_NAME_WIDTH`]); in
    /// full when `width` is `None`.
    pub fn fit(&self, width: Option<usize>) -> String {
        match (self, width) {
            (_, None) => self.full(),
            (Name::Frame(f), Some(w)) => fit_frame(f, w),
            (Name::Text(t), Some(w)) => fit_function(t, w),
        }
    }
}

/// The number of columns `s` takes.
pub(crate) fn columns(s: &str) -> usize {
    s.chars().count()
}

/// A frame's name (as [`Frame::name`] forms it) in `width` columns where it can be: the
/// function shortened first (see the module's rules), then the module or the file.
pub fn fit_frame(frame: &Frame, width: usize) -> String {
    let room = width.max(MIN_NAME_WIDTH);
    let full = frame.name().to_string();
    if columns(&full) <= room {
        return full;
    }
    let (function, tail) = parts(frame);
    let tail_full = tail.fit(usize::MAX);
    let tail_width = columns(&tail_full);
    let collapsed = collapse_lists(function, 0);
    if columns(&collapsed) + tail_width <= room {
        return collapse_lists(function, room - tail_width) + &tail_full;
    }
    // The function, collapsed, keeps what the tail's short form leaves, and at least three
    // fifths of the room; the tail shortens to make room for it.
    let short = room.saturating_sub(columns(&tail.short()));
    // A module stays whole (it says which library: the point), so the function takes
    // what it leaves; a file may give way down to its base name.
    let floor = if tail.keeps_whole() {
        MIN_FUNCTION
    } else {
        (room * 3 / 5).max(MIN_FUNCTION)
    };
    let keep = columns(&collapsed).min(short.max(floor));
    let tail = if keep + tail_width <= room {
        tail_full
    } else {
        tail.fit(room - keep)
    };
    let room = room.saturating_sub(columns(&tail)).max(MIN_FUNCTION);
    cut_function(function, room) + &tail
}

/// A function's name (or any text) in `width` columns where it can be: argument lists
/// collapsed, then the middle cut.
pub fn fit_function(name: &str, width: usize) -> String {
    cut_function(name, width.max(MIN_NAME_WIDTH))
}

/// [`fit_function`] without the floor.
fn cut_function(name: &str, room: usize) -> String {
    if columns(name) <= room {
        return name.to_string();
    }
    let collapsed = collapse_lists(name, room);
    if columns(&collapsed) <= room {
        return collapsed;
    }
    cut_middle(&collapsed, room)
}

/// What follows the function in a frame's name.
#[derive(Debug)]
enum Tail<'a> {
    /// ` (file:line)`.
    Line {
        /// The source file.
        file: &'a str,
        /// The line.
        line: u32,
    },
    /// `+0xOFF (module)`.
    Symbol {
        /// The offset in the function.
        offset: u64,
        /// The module.
        module: &'a str,
    },
    /// ` (module+0xOFF)`, after `[unknown]`.
    Module {
        /// The module.
        module: &'a str,
        /// The offset in the module.
        offset: u64,
    },
    /// Nothing to shorten: nothing, or ` (0xADDR)`.
    Fixed(String),
}

/// A frame's name cut in two, the function (or `[unknown]`) and what follows it; the two
/// together are [`Frame::name`].
fn parts(f: &Frame) -> (&str, Tail<'_>) {
    match (&f.function, &f.file, f.line, &f.module) {
        (Some(func), Some(file), Some(line), _) => (func, Tail::Line { file, line }),
        (Some(func), _, _, Some(module)) => (
            func,
            Tail::Symbol {
                offset: f.function_offset,
                module,
            },
        ),
        (Some(func), _, _, None) => (func, Tail::Fixed(String::new())),
        (None, _, _, Some(module)) => (
            "[unknown]",
            Tail::Module {
                module,
                offset: f.offset,
            },
        ),
        (None, _, _, None) => ("[unknown]", Tail::Fixed(format!(" ({:#x})", f.addr))),
    }
}

impl Tail<'_> {
    /// Whether it is never shortened: a module's name, or nothing to shorten.
    fn keeps_whole(&self) -> bool {
        !matches!(self, Tail::Line { .. })
    }

    /// The tail as short as it goes before the function is cut further: a file without its
    /// directories (`…/harness.rs`); a module whole.
    fn short(&self) -> String {
        match self {
            Tail::Line { file, .. } => match file.rfind('/') {
                Some(slash) => {
                    self.fit(columns(&self.fit(usize::MAX)) - columns(&file[..slash]) + 1)
                }
                None => self.fit(usize::MAX),
            },
            _ => self.fit(usize::MAX),
        }
    }

    /// The tail in `room` columns where it can be: in full if it fits, else its file shortened
    /// (never below [`MIN_PATH`] characters); a module, the line and offsets stay whole.
    fn fit(&self, room: usize) -> String {
        let (before, name, after, file) = match self {
            Tail::Line { file, line } => (" (".to_string(), *file, format!(":{line})"), true),
            Tail::Symbol { offset, module } => {
                (format!("+{offset:#x} ("), *module, ")".into(), false)
            }
            Tail::Module { module, offset } => {
                (" (".into(), *module, format!("+{offset:#x})"), false)
            }
            Tail::Fixed(s) => return s.clone(),
        };
        let name_room = room.saturating_sub(columns(&before) + columns(&after));
        let name = if file {
            // `…/config.rs` at least, or the end of a long file name.
            let floor = match name.rfind('/') {
                Some(slash) => columns(&name[slash..]) + 1,
                None => columns(name),
            };
            cut_path(name, name_room.max(floor.min(MIN_PATH)))
        } else {
            cut_module(name, name_room)
        };
        format!("{before}{name}{after}")
    }
}

/// A module's name in `room` columns, as a last resort (the function is down to its floor):
/// its stem (`librustc_driver`, up to the first `-` or `.`) stays, the middle gives way
/// (`librustc_driver…cf.so`).
fn cut_module(name: &str, room: usize) -> String {
    if columns(name) <= room {
        return name.to_string();
    }
    let stem = name.find(['-', '.']).unwrap_or(name.len());
    let chars: Vec<char> = name.chars().collect();
    let stem = name[..stem].chars().count();
    let tail = room.saturating_sub(stem + 1).min(chars.len() - stem);
    let mut out: String = chars[..stem].iter().collect();
    out.push(ELLIPSIS);
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// A path in `room` columns: as many of its trailing components as fit after `…`
/// (`…/task/harness.rs`), or the end of its file name (`…arness.rs`).
fn cut_path(path: &str, room: usize) -> String {
    if columns(path) <= room {
        return path.to_string();
    }
    let chars: Vec<char> = path.chars().collect();
    for (i, _) in chars.iter().enumerate().filter(|(_, c)| **c == '/') {
        if chars.len() - i < room {
            return std::iter::once(ELLIPSIS)
                .chain(chars[i..].iter().copied())
                .collect();
        }
    }
    let keep = room.saturating_sub(1).max(1);
    std::iter::once(ELLIPSIS)
        .chain(chars[chars.len() - keep..].iter().copied())
        .collect()
}

/// `s` in `room` columns: its start and end, the middle cut to `…` (the start gets the odd
/// character).
fn cut_plain(s: &str, room: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= room {
        return s.to_string();
    }
    let keep = room.saturating_sub(1);
    let tail = keep / 2;
    let head = keep - tail;
    join_cut(&chars[..head], &chars[chars.len() - tail..])
}

/// `head…tail`, leaving nothing dangling at the cut: no opening bracket, half `::` or space
/// before it, no `…` (of a collapsed list) on either side.
fn join_cut(mut head: &[char], mut tail: &[char]) -> String {
    while let [rest @ .., last] = head {
        let lone_colon = *last == ':' && !rest.ends_with(&[':']);
        if lone_colon || matches!(*last, '<' | '(' | ' ' | ELLIPSIS) {
            head = rest;
        } else {
            break;
        }
    }
    while let [ELLIPSIS, rest @ ..] = tail {
        tail = rest;
    }
    head.iter()
        .chain(std::iter::once(&ELLIPSIS))
        .chain(tail)
        .collect()
}

/// A bracketed list in a name, by char index.
#[derive(Debug)]
struct List {
    /// Its `<` or `(`.
    open: usize,
    /// Its `>` or `)`.
    close: usize,
    /// Lists around it.
    depth: usize,
    /// It holds arguments (it follows a name), so it may become `<…>` or `(…)`; not a Rust
    /// qualified path (`<impl Foo for Bar>`, `<T as Trait>`), `(anonymous namespace)` or a
    /// cast.
    collapsible: bool,
}

/// Characters that can end a name that an argument list follows.
fn ends_name(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '$' | '\'' | ']' | '}' | '>' | ')')
}

/// The bracketed lists of a name; `None` where its brackets do not pair.
fn lists(s: &[char]) -> Option<Vec<List>> {
    const ANONYMOUS: &str = "(anonymous namespace)";
    let at = |i: usize, word: &str| {
        word.chars()
            .enumerate()
            .all(|(k, c)| s.get(i + k) == Some(&c))
    };
    let mut found = Vec::new();
    let mut open: Vec<List> = Vec::new();
    // Whether the last thing seen was a name (or `::`, before Rust's `::<T>`).
    let mut after_name = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '(' && at(i, ANONYMOUS) {
            i += ANONYMOUS.chars().count();
            after_name = false;
            continue;
        }
        if at(i, "operator") && (i == 0 || !ends_name(s[i - 1])) {
            // `operator<<`, `operator()`, `operator->*`: the symbol is part of the name, and
            // may be followed by a space before template arguments (`operator< <T>`).
            i += "operator".len();
            if at(i, "()") || at(i, "[]") {
                i += 2;
            } else {
                let symbols = s[i..]
                    .iter()
                    .take(3)
                    .take_while(|c| "<>=!+-*/%^&|~,".contains(**c))
                    .count();
                i += symbols;
                if symbols > 0 {
                    while s.get(i) == Some(&' ') {
                        i += 1;
                    }
                }
            }
            after_name = true;
            continue;
        }
        match c {
            '<' | '(' => {
                let colons = i >= 2 && s[i - 2] == ':' && s[i - 1] == ':';
                // `<impl Foo for Bar>`, `<lambda()>`: names, not arguments.
                let qualified = c == '<' && (at(i + 1, "impl ") || at(i + 1, "lambda"));
                open.push(List {
                    open: i,
                    close: i,
                    depth: open.len(),
                    collapsible: (after_name || (c == '<' && colons)) && !qualified,
                });
                after_name = false;
            }
            // `->` (a Rust `Fn(A) -> B`) closes nothing.
            '>' if i > 0 && s[i - 1] == '-' => after_name = false,
            '>' | ')' => {
                let mut list = open.pop()?;
                if s[list.open] != if c == '>' { '<' } else { '(' } {
                    return None;
                }
                list.close = i;
                found.push(list);
                after_name = true;
            }
            ' ' if at(i, " as ") => {
                // `<T as Trait>` names a path, not arguments.
                if let Some(list) = open.last_mut().filter(|l| s[l.open] == '<') {
                    list.collapsible = false;
                }
                after_name = false;
            }
            _ => after_name = ends_name(c),
        }
        i += 1;
    }
    open.is_empty().then_some(found)
}

/// `name` with argument lists collapsed, one at a time (deepest first, then longest, then
/// rightmost), until it is no wider than `room` or none is left; `name` as it is when its
/// brackets do not pair.
fn collapse_lists(name: &str, room: usize) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    while chars.len() > room {
        let Some(lists) = lists(&chars) else { break };
        let Some(list) = lists
            .iter()
            .filter(|l| l.collapsible && l.close - l.open > 2)
            .max_by_key(|l| (l.depth, l.close - l.open, l.open))
        else {
            break;
        };
        chars.splice(list.open + 1..list.close, [ELLIPSIS]);
    }
    chars.into_iter().collect()
}

/// Where the last component of a name starts: its last `::` outside brackets, or, after a
/// Rust qualified path, the last `::` inside it (`<impl Debug for a::Foo<…>>::fmt` ends in
/// `::Foo<…>>::fmt`, `<a::Vec<…> as core::ops::Drop>::drop` in `::Drop>::drop`).
fn last_component(chars: &[char], seps: &[usize]) -> Option<usize> {
    let lists = lists(chars).unwrap_or_default();
    let inside = |p: usize, l: &List| l.open < p && p < l.close;
    let last = *seps
        .iter()
        .rev()
        .find(|&&p| !lists.iter().any(|l| inside(p, l)))?;
    let qualified = lists
        .iter()
        .find(|l| l.close + 1 == last && chars[l.open] == '<' && !l.collapsible);
    Some(
        qualified
            .and_then(|l| seps.iter().rev().find(|&&p| inside(p, l)).copied())
            .unwrap_or(last),
    )
}

/// `name` in `room` columns with its middle cut to `…`: its end, as many whole `::`
/// components as fit in half the room but at least the last one (see [`last_component`]), and
/// its start in the rest: `llvm::DenseMapBase<…>::grow(…)` → `llvm::Dens…::grow(…)`. With no
/// room for [`MIN_HEAD`] characters of start, `…::grow(…)`; where even that does not fit, the
/// end of the text; a name without `::`, its start and its end.
fn cut_middle(name: &str, room: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= room {
        return name.to_string();
    }
    let seps: Vec<usize> = (1..chars.len())
        .filter(|&i| chars[i - 1] == ':' && chars[i] == ':')
        .map(|i| i - 1)
        .collect();
    let tail_width = |sep: &usize| chars.len() - sep;
    let tail = last_component(&chars, &seps).and_then(|last| {
        seps.iter()
            .copied()
            .filter(|&sep| sep <= last)
            .find(|sep| tail_width(sep) <= room.saturating_sub(1) / 2)
            .or(Some(last).filter(|sep| tail_width(sep) + 1 + MIN_HEAD <= room))
    });
    let Some(tail) = tail else {
        // Too little room for a start: the last component alone, else as much of the end as
        // fits (`…onfiguration<…>>::fmt`); a name without components, its two ends.
        return match last_component(&chars, &seps) {
            Some(last) if tail_width(&last) < room => join_cut(&[], &chars[last..]),
            Some(_) => join_cut(&[], &chars[chars.len() + 1 - room.max(1)..]),
            None => cut_plain(name, room),
        };
    };
    join_cut(&chars[..room - 1 - (chars.len() - tail)], &chars[tail..])
}

/// The site from issue 16: rustc allocating through LLVM.
#[cfg(test)]
pub(crate) const LLVM_GROW: &str = "llvm::DenseMapBase<llvm::DenseMap<llvm::StringRef, llvm::cl::Option*, llvm::DenseMapInfo<llvm::StringRef, void>, llvm::detail::DenseMapPair<llvm::StringRef, llvm::cl::Option*> >, llvm::StringRef, llvm::cl::Option*, llvm::DenseMapInfo<llvm::StringRef, void>, llvm::detail::DenseMapPair<llvm::StringRef, llvm::cl::Option*> >::grow(unsigned int)";

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(function: &str, offset: u64, module: &str) -> Frame {
        Frame {
            module: Some(module.into()),
            function: Some(function.into()),
            function_offset: offset,
            ..Frame::default()
        }
    }

    fn line(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: Some(function.into()),
            file: Some(file.into()),
            line: Some(line),
            ..Frame::default()
        }
    }

    /// Every form of [`Frame::name`] is the function and the tail, whole.
    #[test]
    fn parts_make_the_name() {
        let forms = [
            line("leak", "a.c", 3),
            symbol("leak", 0x1b, "prog"),
            Frame {
                function: Some("leak".into()),
                ..Frame::default()
            },
            Frame {
                module: Some("libc.so.6".into()),
                offset: 0x9a0b1,
                ..Frame::default()
            },
            Frame::unknown(0x7f00),
        ];
        for f in forms {
            let (function, tail) = parts(&f);
            assert_eq!(
                function.to_string() + &tail.fit(usize::MAX),
                f.name().to_string()
            );
        }
    }

    #[test]
    fn names_that_fit_are_untouched() {
        let f = symbol(LLVM_GROW, 0x69, "libLLVM.so.18.1");
        assert_eq!(fit_frame(&f, 1000), f.name().to_string());
        assert_eq!(Name::Frame(&f).fit(None), f.name().to_string());
        assert_eq!(fit_function("main", 20), "main");
        // Below the floor, the floor.
        assert_eq!(
            fit_function("a_name_of_twenty_chr", 5),
            "a_name_of_twenty_chr"
        );
    }

    /// Issue 16's site at 80 columns (53 left for it in the summary table) and at 120 (93):
    /// lists collapse, the module and the offset stay.
    #[test]
    fn the_llvm_site_keeps_its_module_and_offset() {
        let f = symbol(LLVM_GROW, 0x69, "libLLVM.so.18.1");
        assert_eq!(
            fit_frame(&f, 53),
            "llvm::DenseMapBase<…>::grow(…)+0x69 (libLLVM.so.18.1)"
        );
        assert_eq!(
            fit_frame(&f, 93),
            "llvm::DenseMapBase<…>::grow(unsigned int)+0x69 (libLLVM.so.18.1)"
        );
        assert_eq!(
            fit_frame(&f, 40),
            "llvm::D…::grow(…)+0x69 (libLLVM.so.18.1)"
        );
        // At the floor: the last component, the offset, the module's ends.
        assert_eq!(fit_frame(&f, 20), "…::grow(…)+0x69 (libLLVM…)");
        // rustc's own LLVM has a long name: it stays whole, the function gives way.
        let f = symbol(LLVM_GROW, 0x69, "libLLVM.so.19.1-rust-1.85.0-stable");
        assert_eq!(
            fit_frame(&f, 53),
            "…::grow(…)+0x69 (libLLVM.so.19.1-rust-1.85.0-stable)"
        );
        for w in MIN_NAME_WIDTH..300 {
            let s = fit_frame(&f, w);
            // Overflow only below the function's floor and the module's stem; the module
            // whole wherever the function can give way instead.
            assert!(columns(&s) <= w.max(26), "{w}: {s}");
            assert!(s.contains("(libLLVM"), "{w}: {s}");
            if w >= 53 {
                assert!(
                    s.contains("(libLLVM.so.19.1-rust-1.85.0-stable)"),
                    "{w}: {s}"
                );
            }
            assert!(
                s.contains("::grow(") && s.contains("+0x69 (libL"),
                "{w}: {s}"
            );
        }
    }

    /// C++ operators, lambdas and anonymous namespaces are names, not lists.
    #[test]
    fn operators_and_anonymous_namespaces_stay_whole() {
        let name = "std::basic_ostream<char, std::char_traits<char> >& (anonymous namespace)::operator<< <std::vector<std::pair<int, int>, std::allocator<std::pair<int, int> > > >(std::basic_ostream<char, std::char_traits<char> >&, Printer<std::vector<int> > const&)";
        assert_eq!(
            fit_function(name, 100),
            "std::basic_ostream<…>& (anonymous namespace)::operator<< <std::vector<…> >(…)"
        );
        assert_eq!(
            collapse_lists(name, 0),
            "std::basic_ostream<…>& (anonymous namespace)::operator<< <…>(…)"
        );
        assert_eq!(
            fit_function(name, 40),
            "std::basic_ostream…::operator<< <…>(…)"
        );
        for (name, collapsed) in [
            ("Foo::operator()(int) const", "Foo::operator()(…) const"),
            (
                "Foo::operator<(Foo const&) const",
                "Foo::operator<(…) const",
            ),
            ("Foo::operator->() const", "Foo::operator->() const"),
            (
                "Foo::operator<=>(Foo const&) const",
                "Foo::operator<=>(…) const",
            ),
            ("Foo::operator>>=(int)", "Foo::operator>>=(…)"),
            (
                "std::less<void>::operator()<int&, int&>(int&, int&) const",
                "std::less<…>::operator()<…>(…) const",
            ),
            (
                "bool std::operator< <char>(std::basic_string<char> const&, char const*)",
                "bool std::operator< <…>(…)",
            ),
            (
                "main::{lambda(int, char const*)#1}::operator()(int, char const*) const",
                "main::{lambda(…)#1}::operator()(…) const",
            ),
            ("foo::<lambda()>::operator()", "foo::<lambda()>::operator()"),
            // Brackets that do not pair: left as they are.
            ("f(a<b)", "f(a<b)"),
        ] {
            assert_eq!(collapse_lists(name, 0), collapsed);
        }
    }

    /// Rust's qualified paths keep their type and trait; lists inside them collapse.
    #[test]
    fn rust_qualified_paths_stay_whole() {
        for (name, collapsed) in [
            (
                "<alloc::vec::Vec<u8, alloc::alloc::Global> as core::ops::drop::Drop>::drop",
                "<alloc::vec::Vec<…> as core::ops::drop::Drop>::drop",
            ),
            (
                "<impl core::fmt::Debug for my_crate::Foo<u32>>::fmt",
                "<impl core::fmt::Debug for my_crate::Foo<…>>::fmt",
            ),
            (
                "core::ptr::drop_in_place::<alloc::vec::Vec<u8>>",
                "core::ptr::drop_in_place::<…>",
            ),
            (
                "std::thread::spawn::<Box<dyn Fn(u8) -> u8>, ()>",
                "std::thread::spawn::<…>",
            ),
        ] {
            assert_eq!(collapse_lists(name, 0), collapsed);
        }
        // Cut, the impl keeps its type with the method; the cargo registry path its file.
        let f = line(
            "<impl core::fmt::Debug for my_crate::config::ServerConfiguration<alloc::string::String>>::fmt",
            "/home/me/.cargo/registry/src/index.crates.io-6f17d22bba15001f/my_crate-1.0.0/src/config.rs",
            123,
        );
        assert_eq!(
            fit_frame(&f, 60),
            "<impl core…::ServerConfiguration<…>>::fmt (…/config.rs:123)"
        );
        assert_eq!(
            fit_frame(&f, 120),
            "<impl core::fmt::Debug for my_crate::config::ServerConfiguration<…>>::fmt (…/my_crate-1.0.0/src/config.rs:123)"
        );
    }

    #[test]
    fn a_module_keeps_its_stem() {
        let m = "librustc_driver-6108105cd7e839cf.so";
        assert_eq!(cut_module(m, 100), m);
        assert_eq!(cut_module(m, 21), "librustc_driver…cf.so");
        assert_eq!(cut_module(m, 5), "librustc_driver…");
        assert_eq!(cut_module("libLLVM.so.22.1-rust", 12), "libLLVM…rust");
    }

    #[test]
    fn paths_and_modules_give_way_last() {
        assert_eq!(cut_path("/a/bb/ccc/harness.rs", 16), "…/ccc/harness.rs");
        assert_eq!(cut_path("/a/bb/ccc/harness.rs", 15), "…/harness.rs");
        assert_eq!(cut_path("/a/bb/ccc/harness.rs", 8), "…ness.rs");
        assert_eq!(
            cut_plain("libLLVM.so.19.1-rust-1.85.0-stable", 15),
            "libLLVM…-stable"
        );
        let f = Frame {
            module: Some("libLLVM.so.19.1-rust-1.85.0-stable".into()),
            offset: 0x1234,
            ..Frame::default()
        };
        assert_eq!(fit_frame(&f, 30), "[unknown] (libLLVM…ble+0x1234)");
    }

    /// Odd text neither panics nor comes out wider than asked (text has no tail to keep).
    #[test]
    fn odd_text_fits() {
        for name in [
            "",
            "…",
            "::",
            ":::::::::::::::::::::::::::",
            "<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<",
            ")))(((>>><<<)))(((>>><<<)))(((",
            "a::b<c::d<e::f(g::h)>>::i::j::k::l::m::n::o::p",
            "ñàü::ö<ü::ß, ñ>::ç(é, è, ê, ë, ā, ē, ī, ō, ū, ȳ, ǖ)",
            "operator<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<",
            "operator",
            "x::operator()<T, U, V, W, X, Y, Z>(int, int, int) const",
            LLVM_GROW,
        ] {
            for w in 0..80 {
                let s = fit_function(name, w);
                assert!(columns(&s) <= w.max(MIN_NAME_WIDTH), "{w}: {s}");
                let f = symbol(name, 1, "a-module-name-longer-than-sixteen.so");
                fit_frame(&f, w);
            }
        }
    }

    #[test]
    fn the_middle_goes_before_the_ends() {
        for (name, cut) in [
            ("llvm::DenseMapBase<…>::grow(…)", "llvm::Dens…::grow(…)"),
            ("a::b::c::d::e::f::g::h::i::j::k", "a::b::c::d…::i::j::k"),
            ("no_colons_in_this_long_name", "no_colons_…long_name"),
            // The last component does not fit: its end.
            (
                "x::a_very_long_last_component_name_here",
                "…component_name_here",
            ),
        ] {
            assert_eq!(cut_middle(name, 20), cut);
        }
    }
}
