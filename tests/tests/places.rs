//! The leak check's roots named in a live process: the workload (workloads/places.c) keeps a
//! heap pointer in a global, in locals of a main-thread and of another thread's function, in
//! a thread-local, and shows an anonymous mapping; the test freezes it, copies its writable
//! memory, and names each of those words.

use muppy::{
    places::{self, Places},
    symbols::{Modules, SiteNamer},
    target::Tracer,
};
use muppy_core::model::{Image, Place, Segment};
use muppy_tests::{field_u64, send, start_workload};

fn function(place: &Place) -> Option<&str> {
    match place {
        Place::Stack { frame: Some(f), .. } => f.function.as_deref(),
        _ => None,
    }
}

#[test]
fn names_globals_stack_frames_tls_and_anonymous_memory() {
    let mut child = start_workload("places", &[]);
    let mut stdin = child.stdin();
    let lines = child.stdout();
    let ready = lines.wait_for("ready", 60).pop().expect("ready line");
    let pid = u32::try_from(field_u64(&ready, "pid")).expect("pid");
    let thread = u32::try_from(field_u64(&ready, "thread")).expect("tid");

    let tracer = Tracer::start(None, false, |_, _| {}, |_| {}).expect("tracer");
    let frozen = tracer.freeze(pid).expect("freeze");
    let maps = places::parse_mappings(
        &std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps"),
    );
    let writable: Vec<_> = maps
        .iter()
        .filter(|m| m.readable && m.writable && m.name != "[vvar]")
        .map(|m| m.range())
        .collect();
    let copied = tracer.read(pid, &writable).expect("read");
    let image = Image::new(
        copied
            .into_iter()
            .map(|m| Segment {
                start: m.range.start,
                bytes: m.bytes,
            })
            .collect(),
    );
    let mut modules = Modules::new(pid);
    modules.refresh().expect("modules");
    let places = Places::new(
        pid,
        &maps,
        &frozen.threads,
        &image,
        &modules,
        &mut SiteNamer::new(),
    );
    tracer.resume(pid).expect("resume");

    let named: Vec<(&str, Place)> = [
        "global",
        "main_local",
        "main_tls",
        "thread_local",
        "thread_tls",
        "anon",
    ]
    .into_iter()
    .map(|k| (k, places.name(field_u64(&ready, k))))
    .collect();
    for (k, p) in &named {
        eprintln!("{k:14} {}", p.describe());
    }
    let place = |k: &str| &named.iter().find(|(n, _)| *n == k).expect("named").1;
    match place("global") {
        Place::Global {
            symbol,
            module,
            section,
            offset,
        } => {
            assert_eq!(symbol.as_deref(), Some("g_roots"));
            assert_eq!(module, "places");
            assert_eq!(section.as_deref(), Some(".bss"));
            assert_eq!(offset % 8, 0);
        }
        p => panic!("global: {p:?}"),
    }
    assert!(
        matches!(place("main_local"), Place::Stack { tid, .. } if *tid == pid),
        "{:?}",
        place("main_local")
    );
    assert_eq!(function(place("main_local")), Some("hold_in_main"));
    assert!(
        matches!(place("thread_local"), Place::Stack { tid, .. } if *tid == thread),
        "{:?}",
        place("thread_local")
    );
    assert_eq!(function(place("thread_local")), Some("hold_in_thread"));
    assert_eq!(place("main_tls"), &Place::Tls { tid: pid });
    assert_eq!(place("thread_tls"), &Place::Tls { tid: thread });
    assert!(
        matches!(place("anon"), Place::Anonymous { mapping, addr } if addr - mapping == 0x100),
        "{:?}",
        place("anon")
    );
    let stacks = places.stack_ranges();
    assert_eq!(stacks.len(), frozen.threads.len());
    assert!(
        stacks
            .iter()
            .any(|(t, r)| *t == thread && r.contains(&field_u64(&ready, "thread_tls")))
    );

    drop(tracer);
    send(&mut stdin, "go");
    let status = child.wait(60);
    assert!(status.success(), "{status}");
}
