//! Naming allocation sites and the frames of call paths.
//!
//! A return address becomes a structured [`Frame`]: the module and offset it falls in, and,
//! where the files tell, the function, the offset into it, the source file and line (and
//! whether that function was inlined). How a frame is shown is the printers' business
//! (`Frame::name` gives the table form).
//!
//! Addresses are resolved through [`Modules`], a record of the target's executable file
//! mappings that keeps each mapped file open. Symbolization reads the files through those open
//! descriptors, so sites still resolve after the target has exited and its `/proc` entry is gone.
//!
//! Where names come from, per file: DWARF inside the file itself gives names and lines. A file
//! without it (a distribution's libc) is named from its separate debug file (found by build
//! id) through that file's symbol table only: its DWARF would cost the tracer more memory than
//! everything else it holds, for line numbers inside system libraries. Otherwise the file's own
//! symbol tables.
//!
//! Names are demangled (Rust and C++) unless the process chose otherwise once, before the first
//! name was resolved ([`set_demangling`]): `muppy-trace --demangle=no` shows them as the files
//! store them (`_ZN...`), in tables and JSON alike, as [`crate::places`] names globals.

use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, LazyLock, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source::Elf, source::Source};
use muppy_core::model::{Frame, ModuleFile};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

/// One executable file mapping of the target.
#[derive(Debug)]
pub struct Module {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// File offset that `start` maps.
    pub offset: u64,
    /// The file's path as the target sees it (inside its mount namespace).
    pub path: String,
    /// The file, kept open, and where its names come from; `None` if it could not be
    /// opened. Shared by every module of every process that maps the same file.
    file: Option<Arc<OpenFile>>,
}

/// A mapped file, open, and where its names come from: one per file (device and inode) while
/// any process's modules hold it, and [`KEEP_UNUSED`] after, so that the symbolizer, which
/// caches what it parsed, parses each file once however many processes map it (`--all`, fork
/// and exec, a shell's children one after the other).
#[derive(Debug)]
struct OpenFile {
    file: File,
    names: Names,
    /// Its GNU build id, lower-case hex (profiles name the build of each file by it).
    build_id: Option<String>,
}

/// An open file, and since when no module holds it.
struct Registered {
    open: Arc<OpenFile>,
    unused_since: Option<Instant>,
}

/// Open files by (device, inode), and how many were closed since the symbolizers last
/// started afresh.
type FileRegistry = Mutex<(HashMap<(u64, u64), Registered>, usize)>;

/// The session's open files.
static FILES: LazyLock<FileRegistry> = LazyLock::new(|| Mutex::new((HashMap::new(), 0)));

/// How long a file no module holds stays open: the same programs start again and again, and
/// opening one costs a parse (and its symbolizer entry, a parse of its symbols).
const KEEP_UNUSED: Duration = Duration::from_secs(60);

/// Files closed after which every thread's symbolizer starts afresh: a symbolizer keeps what
/// it parsed of every file it ever read, so on a machine that keeps building and running new
/// programs it would grow for as long as the session runs.
const FRESH_AFTER: usize = 64;

/// Bumped when the symbolizers are to start afresh (see [`FRESH_AFTER`]).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Closes the files no module has held for [`KEEP_UNUSED`] as of `now` (the processes that
/// mapped them ended), and every [`FRESH_AFTER`] files closed has the symbolizers start
/// afresh. Their paths (`/proc/self/fd/N`) may name other files later: the symbolizer checks
/// each path's device, inode, size and time before it uses what it parsed, so a reused number
/// is read anew. Returns how many it closed.
pub fn release_unused_files(now: Instant) -> usize {
    let mut guard = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let (files, closed_since) = &mut *guard;
    let before = files.len();
    files.retain(|_, r| {
        if Arc::strong_count(&r.open) > 1 {
            r.unused_since = None;
            return true;
        }
        let since = *r.unused_since.get_or_insert(now);
        now.saturating_duration_since(since) < KEEP_UNUSED
    });
    let closed = before - files.len();
    *closed_since += closed;
    if *closed_since >= FRESH_AFTER {
        *closed_since = 0;
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    closed
}

impl OpenFile {
    /// The one [`OpenFile`] for `file`: a new one, or the one already open for the same file
    /// (`file` is then closed).
    fn shared(file: File, root: &Path) -> Arc<OpenFile> {
        let key = file.metadata().map(|m| (m.dev(), m.ino())).ok();
        let mut guard = FILES.lock().unwrap_or_else(|e| e.into_inner());
        let files = &mut guard.0;
        if let Some(k) = key
            && let Some(r) = files.get(&k)
        {
            return Arc::clone(&r.open);
        }
        // One parse of the file serves both: the build id also finds its debug file.
        let (names, build_id) = {
            let cache = object::ReadCache::new(&file);
            match object::File::parse(&cache) {
                Ok(elf) => {
                    let id = elf.build_id().ok().flatten().map(hex);
                    (Names::of(&elf, id.as_deref(), root), id)
                }
                Err(_) => (Names::Symbols, None),
            }
        };
        let open = Arc::new(OpenFile {
            file,
            names,
            build_id,
        });
        if let Some(k) = key {
            let r = Registered {
                open: Arc::clone(&open),
                unused_since: None,
            };
            files.insert(k, r);
        }
        open
    }
}

/// Where a module's names come from (see the module docs).
#[derive(Debug)]
enum Names {
    /// DWARF in the file itself: names and lines.
    Embedded,
    /// The symbol table of a separate debug file, kept open, addressed by virtual address:
    /// the module's loadable segments as (file offset, virtual address, size).
    DebugFile(File, Vec<(u64, u64, u64)>),
    /// The file's own symbol tables.
    Symbols,
}

impl Names {
    /// Looks at the mapped file (`elf`, whose build id is `id`): embedded DWARF, else a debug
    /// file under the target's root.
    fn of<'data, R: object::ReadRef<'data>>(
        elf: &object::File<'data, R>,
        id: Option<&str>,
        root: &Path,
    ) -> Names {
        let has_dwarf = elf
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        if has_dwarf {
            return Names::Embedded;
        }
        let Some(hex) = id.filter(|h| h.len() >= 3) else {
            return Names::Symbols;
        };
        let path = root.join(format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        ));
        let loads = elf
            .segments()
            .map(|seg| {
                let (off, size) = seg.file_range();
                (off, seg.address(), size)
            })
            .collect();
        match File::open(path) {
            Ok(debug) => Names::DebugFile(debug, loads),
            Err(_) => Names::Symbols,
        }
    }
}

/// Bytes in lower-case hex, as build ids are written.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Module {
    /// The file name, for display.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The file offset that `addr` maps to.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }

    fn readable_path(&self) -> Option<PathBuf> {
        self.file
            .as_ref()
            .map(|f| PathBuf::from(format!("/proc/self/fd/{}", f.file.as_raw_fd())))
    }
}

/// The executable mappings of one process, accumulated over its life: a refresh adds what is
/// new and replaces what was remapped, but keeps modules that were unmapped since, so blocks
/// allocated from a library later closed still resolve.
#[derive(Debug)]
pub struct Modules {
    pid: u32,
    modules: Vec<Module>,
    /// The modules as the model holds them (for profiles and snapshots), kept in step.
    files: Vec<ModuleFile>,
    /// The [`maps_sum`] of the maps text read last.
    sum: Option<u64>,
}

/// One line of `/proc/PID/maps` for an executable file mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// File offset.
    pub offset: u64,
    /// Path.
    pub path: String,
    /// The file's (device, inode), where the mapping was learnt from the kernel as the process
    /// exited: the file is opened by its path in this process's root then, and used only if it
    /// is that file.
    pub file_id: Option<(u64, u64)>,
}

/// Parses the executable, file-backed lines of a `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<MapsEntry> {
    crate::places::parse_mappings(text)
        .into_iter()
        .filter(|m| m.executable && m.is_file())
        .map(|m| MapsEntry {
            start: m.start,
            end: m.end,
            offset: m.offset,
            path: m.name,
            file_id: None,
        })
        .collect()
}

/// The [`muppy_common::mapping_sum`] of the executable file mappings of a `/proc/PID/maps`
/// text, as the probes sum them at the process's exit (every executable mapping of a file).
pub fn maps_sum(text: &str) -> u64 {
    crate::places::parse_mappings(text)
        .iter()
        .filter(|m| m.executable && m.inode != 0)
        .fold(0, |sum, m| {
            muppy_common::mapping_sum(sum, m.start, m.end, m.offset)
        })
}

impl Modules {
    /// An empty record for `pid`; call [`Modules::refresh`] to fill it.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            modules: Vec::new(),
            files: Vec::new(),
            sum: None,
        }
    }

    /// The [`maps_sum`] of the `/proc/PID/maps` text read last, if any was.
    pub fn sum(&self) -> Option<u64> {
        self.sum
    }

    /// Takes in a `/proc/PID/maps` text read elsewhere.
    pub fn learn(&mut self, text: &str) {
        self.add(parse_maps(text));
        self.sum = Some(maps_sum(text));
    }

    /// Reads the target's current mappings and opens the files of new ones. Fails only if the
    /// maps cannot be read (the process is gone).
    pub fn refresh(&mut self) -> io::Result<()> {
        let text = fs::read_to_string(format!("/proc/{}/maps", self.pid))?;
        self.learn(&text);
        Ok(())
    }

    /// Adds mappings learnt otherwise than from `/proc/PID/maps` now (an image's, after an exec
    /// removed them: see [`crate::target::TreeEvent::OldImage`]), as [`Modules::refresh`] does.
    pub fn add(&mut self, entries: Vec<MapsEntry>) {
        for e in entries {
            // A module whose file could not be opened (the process ended while its maps were
            // read) is taken again: the kernel may have sent it as the process exited.
            let known = self.modules.iter().any(|m| {
                m.start == e.start
                    && m.end == e.end
                    && m.offset == e.offset
                    && m.path == e.path
                    && m.file.is_some()
            });
            if known {
                continue;
            }
            self.modules
                .retain(|m| m.end <= e.start || m.start >= e.end);
            let file = match e.file_id {
                Some(id) => open_exited(&e.path, id),
                None => {
                    let root = PathBuf::from(format!("/proc/{}/root", self.pid));
                    self.open(&e).map(|f| OpenFile::shared(f, &root))
                }
            };
            self.modules.push(Module {
                start: e.start,
                end: e.end,
                offset: e.offset,
                path: e.path,
                file,
            });
        }
        self.files = self
            .modules
            .iter()
            .map(|m| ModuleFile {
                path: m.path.clone(),
                build_id: m.file.as_ref().and_then(|f| f.build_id.clone()),
                start: m.start,
                limit: m.end,
                offset: m.offset,
            })
            .collect();
    }

    /// The modules as the model holds them, for a heap.
    pub fn files(&self) -> &[ModuleFile] {
        &self.files
    }

    /// Opens the mapped file itself (through map_files, which works across mount namespaces
    /// and for deleted files), falling back to the path under the target's root.
    fn open(&self, e: &MapsEntry) -> Option<File> {
        let pid = self.pid;
        File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end))
            .or_else(|_| {
                File::open(
                    Path::new(&format!("/proc/{pid}/root")).join(e.path.trim_start_matches('/')),
                )
            })
            .ok()
    }

    /// Whether `addr` lies in a mapping of the file named `name` (by file name).
    pub fn in_module_named(&self, addr: u64, name: &str) -> bool {
        self.find(addr).is_some_and(|m| m.name() == name)
    }

    /// The module mapping `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&Module> {
        self.modules
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
    }
}

/// The file (`id`: device and inode) of a process that has exited, whose `/proc/PID` is gone:
/// the one already open if the session has it, else `path` opened in this process's root if it
/// is that file (the process may have had another root, or the file may have been replaced).
fn open_exited(path: &str, id: (u64, u64)) -> Option<Arc<OpenFile>> {
    if let Some(r) = FILES.lock().unwrap_or_else(|e| e.into_inner()).0.get(&id) {
        return Some(Arc::clone(&r.open));
    }
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    ((meta.dev(), meta.ino()) == id).then(|| OpenFile::shared(file, Path::new("/")))
}

/// Whether names are demangled: chosen once for the process (see [`set_demangling`]).
static DEMANGLE: OnceLock<bool> = OnceLock::new();

/// Chooses, once for the whole process and before the first name is resolved, whether
/// function and symbol names are demangled (`true`, the default) or kept as the files store
/// them (`false`). Every symbolizer is built with the choice, so it cannot change later:
/// returns whether `on` is the choice in force (false if another was fixed before).
pub fn set_demangling(on: bool) -> bool {
    DEMANGLE.set(on).is_ok() || demangling() == on
}

/// Whether names are demangled ([`set_demangling`]; true unless chosen otherwise). The first
/// call fixes the choice.
pub fn demangling() -> bool {
    *DEMANGLE.get_or_init(|| true)
}

/// Turns return addresses into frames, remembering each answer (per process: addresses
/// differ between processes; what was parsed from the files is shared).
pub struct SiteNamer {
    /// Shared with the traces that hold them: a long run sees many paths through few frames.
    cache: HashMap<u64, Arc<Frame>>,
    /// [`SiteNamer::outer_frame`]'s answers.
    outer: HashMap<u64, Frame>,
}

thread_local! {
    /// The thread's symbolizer, and the [`GENERATION`] it was made in: it caches every file
    /// it parsed, until it is made anew.
    static SYMBOLIZER: std::cell::RefCell<(u64, Symbolizer)> =
        std::cell::RefCell::new((GENERATION.load(Ordering::Relaxed), symbolizer()));
}

/// A symbolizer with DWARF line info, inlined functions and demangling as chosen
/// ([`demangling`]).
fn symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(demangling())
        .build()
}

/// Runs `f` with the thread's symbolizer, made anew first if files were closed since (see
/// [`release_unused_files`]).
fn with_symbolizer<R>(f: impl FnOnce(&Symbolizer) -> R) -> R {
    SYMBOLIZER.with(|cell| {
        let generation = GENERATION.load(Ordering::Relaxed);
        let mut s = cell.borrow_mut();
        if s.0 != generation {
            *s = (generation, symbolizer());
        }
        f(&s.1)
    })
}

impl Default for SiteNamer {
    fn default() -> Self {
        Self::new()
    }
}

impl SiteNamer {
    /// A namer that remembers nothing yet.
    pub fn new() -> Self {
        Self {
            cache: HashMap::new(),
            outer: HashMap::new(),
        }
    }

    /// Forgets the frames it gave for addresses in no known module, so that they are looked
    /// up again (in modules learnt since).
    pub fn forget_unplaced(&mut self) {
        self.cache.retain(|_, f| f.module.is_some());
        self.outer.retain(|_, f| f.module.is_some());
    }

    /// The name of the frame of the return address `ret`, as tables show it.
    pub fn name(&mut self, modules: &Modules, ret: u64) -> String {
        self.frame(modules, ret).name().to_string()
    }

    /// The frame of the return address `ret`.
    pub fn frame(&mut self, modules: &Modules, ret: u64) -> &Arc<Frame> {
        if !self.cache.contains_key(&ret) {
            let name = self.resolve(modules, ret, true);
            self.cache.insert(ret, Arc::new(name));
        }
        &self.cache[&ret]
    }

    /// The frame of the return address `ret` named by the function its code was compiled
    /// into, not by a function inlined there: the function whose stack frame it is (and the
    /// line in it), as naming a stack word wants.
    pub fn outer_frame(&mut self, modules: &Modules, ret: u64) -> &Frame {
        if !self.outer.contains_key(&ret) {
            let name = self.resolve(modules, ret, false);
            self.outer.insert(ret, name);
        }
        &self.outer[&ret]
    }

    /// Names `ret`'s frame by the innermost inlined function there, or by the outer one.
    fn resolve(&self, modules: &Modules, ret: u64, innermost: bool) -> Frame {
        let Some(module) = modules.find(ret) else {
            return Frame::unknown(ret);
        };
        let off = module.file_offset(ret);
        let unknown = || Frame {
            addr: ret,
            module: Some(module.name().to_string()),
            offset: off,
            ..Frame::default()
        };
        let (Some(path), Some(open)) = (module.readable_path(), module.file.as_ref()) else {
            return unknown();
        };
        // The return address follows the call; one byte back lies inside the call instruction,
        // which is the line that made the allocation.
        let at = off.saturating_sub(1);
        let (elf, input) = match &open.names {
            Names::Embedded => (Elf::new(path), Input::FileOffset(at)),
            Names::DebugFile(debug, loads) => {
                let Some(vaddr) = loads
                    .iter()
                    .find(|(o, _, size)| *o <= at && at < o + size)
                    .map(|(o, v, _)| at - o + v)
                else {
                    return unknown();
                };
                let mut elf = Elf::new(PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    debug.as_raw_fd()
                )));
                elf.debug_syms = false;
                (elf, Input::VirtOffset(vaddr))
            }
            Names::Symbols => {
                let mut elf = Elf::new(path);
                elf.debug_syms = false;
                (elf, Input::FileOffset(at))
            }
        };
        with_symbolizer(|symbolizer| {
            let Ok(Symbolized::Sym(sym)) = symbolizer.symbolize_single(&Source::Elf(elf), input)
            else {
                return unknown();
            };
            let (func, code, inlined) = match sym.inlined.last() {
                Some(inl) if innermost => (
                    inl.name.as_ref(),
                    inl.code_info.as_ref().or(sym.code_info.as_deref()),
                    true,
                ),
                _ => (sym.name.as_ref(), sym.code_info.as_deref(), false),
            };
            let (file, line) = match code.and_then(|c| c.line.map(|l| (c, l))) {
                Some((c, line)) => (Some(Path::new(&c.file).display().to_string()), Some(line)),
                None => (None, None),
            };
            Frame {
                function: Some(func.to_string()),
                function_offset: u64::try_from(sym.offset)
                    .unwrap_or(u64::MAX)
                    .saturating_add(1),
                file,
                line,
                inlined,
                ..unknown()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_file_mappings_only() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123 /usr/bin/prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 123 /usr/bin/prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 [heap]
7f1000028000-7f100019d000 r-xp 00028000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd000000-7ffd002000 r-xp 00000000 00:00 0 [vdso]
7f2000001000-7f2000002000 r-xp 00001000 fe:01 789 /tmp/my lib.so (deleted)
";
        let e = parse_maps(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].start, 0x55d0c0a01000);
        assert_eq!(e[0].offset, 0x1000);
        assert_eq!(e[1].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(e[2].path, "/tmp/my lib.so");
    }

    /// A return address inside `here` (this test binary has debug info).
    #[inline(never)]
    fn here() -> u64 {
        let f: fn() -> u64 = here;
        f as usize as u64 + 1
    }

    #[test]
    fn names_own_function_with_line_info() {
        let mut modules = Modules::new(std::process::id());
        modules.refresh().unwrap();
        let addr = here();
        let name = SiteNamer::new().name(&modules, addr);
        assert!(name.contains("here"), "{name}");
    }

    /// The file offset of the dynamic symbol `name` in the ELF file at `path`.
    fn symbol_offset(path: &str, name: &str) -> u64 {
        use object::ObjectSymbol as _;
        let data = fs::read(path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let addr = elf
            .dynamic_symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} in {path}"))
            .address();
        elf.segments()
            .find_map(|seg| {
                let (off, size) = seg.file_range();
                let va = seg.address();
                (va <= addr && addr < va + size).then(|| addr - va + off)
            })
            .unwrap()
    }

    /// A file closed once no module has held it for a while may leave its number to another
    /// file: that file's frames are its own, not what the symbolizer parsed under the same
    /// `/proc/self/fd/N` before. The two files are named from themselves (this test's own
    /// DWARF, libgcc_s's symbols), so both are read through their own descriptors.
    #[test]
    fn a_closed_files_number_reused_by_another_file_names_the_new_one() {
        let mut own = Modules::new(std::process::id());
        own.refresh().unwrap();
        let m = own.find(here()).unwrap();
        let (exe, here_offset) = (m.path.clone(), m.file_offset(here()));
        drop(own);
        let libgcc = fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libgcc_s.so"))
            .unwrap()
            .to_string();
        let name_at = |file: &str, offset: u64| {
            let mut modules = Modules::new(std::process::id());
            modules.add(vec![MapsEntry {
                start: 0x1000_0000,
                end: 0x2000_0000,
                offset: 0,
                path: file.to_string(),
                file_id: None,
            }]);
            let fd = modules.modules[0].file.as_ref().unwrap().file.as_raw_fd();
            (SiteNamer::new().name(&modules, 0x1000_0000 + offset), fd)
        };
        let (name, fd) = name_at(&exe, here_offset);
        assert!(name.contains("here"), "{name}");
        // Unheld from now on; closed once unheld for KEEP_UNUSED (unless another test holds
        // it meanwhile).
        let now = Instant::now();
        release_unused_files(now);
        release_unused_files(now + KEEP_UNUSED);
        let (name, reused) = name_at(&libgcc, symbol_offset(&libgcc, "_Unwind_Resume") + 1);
        assert!(
            name.starts_with("_Unwind_Resume"),
            "{name} (fd {fd} before, {reused} now)"
        );
    }

    #[test]
    fn unmapped_address_is_unknown_with_address() {
        let modules = Modules::new(std::process::id());
        assert_eq!(
            SiteNamer::new().name(&modules, 0x1234),
            "[unknown] (0x1234)"
        );
    }
}
