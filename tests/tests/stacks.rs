//! Call stacks: two call paths, three frames deep, reach one allocating function. Grouped by
//! stack and drawn as a tree, both paths show with their exact counts and frames.

use muppy_tests::{ebpf_available, paths_stacks, trace, workload};
use serde_json::Value;

fn run(args: &[&str]) -> Vec<Value> {
    let bin = workload("paths");
    let mut all = args.to_vec();
    all.extend(["--format", "json", "--", bin.to_str().unwrap()]);
    let run = trace(&all, "");
    assert_eq!(run.code, Some(0), "{run}");
    run.json()
}

#[test]
fn grouping_by_stack_shows_both_paths_exactly() {
    if !ebpf_available("grouping_by_stack_shows_both_paths_exactly") {
        return;
    }
    let out = run(&["--group-by", "stack"]);
    let s = out.last().unwrap();
    assert_eq!(s["group_by"], "stack", "{s}");
    assert_eq!(s["lost_stacks"], 0, "{s}");
    assert_eq!(s["lost_events"], 0, "{s}");
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{s}");
    for (row, (stack, objects, bytes)) in rows.iter().zip(paths_stacks()) {
        let got: Vec<&str> = row["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        // The frames above main belong to libc's start-up code; the program's own are exact.
        assert_eq!(got[..stack.len()], stack[..], "{s}");
        assert_eq!(row["site"], stack[0].as_str());
        assert_eq!(
            (row["objects"].as_u64(), row["bytes"].as_u64()),
            (Some(objects), Some(bytes)),
            "{s}"
        );
    }
}

#[test]
fn grouping_by_function_and_size_adds_up() {
    if !ebpf_available("grouping_by_function_and_size_adds_up") {
        return;
    }
    let out = run(&["--group-by", "function"]);
    let s = out.last().unwrap();
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{s}");
    assert_eq!(rows[0]["function"], "make_node");
    assert_eq!(
        (rows[0]["objects"].as_u64(), rows[0]["bytes"].as_u64()),
        (Some(500), Some(27200))
    );

    let out = run(&["--group-by", "size"]);
    let s = out.last().unwrap();
    let sizes: Vec<(u64, u64, u64)> = s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["size"].as_u64().unwrap(),
                r["objects"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sizes, vec![(48, 300, 14400), (64, 200, 12800)], "{s}");
}

#[test]
fn tree_branches_into_both_paths_with_exact_counts() {
    if !ebpf_available("tree_branches_into_both_paths_with_exact_counts") {
        return;
    }
    let out = run(&["tree", "--site", "^make_node", "--maxdepth", "4"]);
    let r = serde_json::Value::Array(out.clone());
    let t = &out[0];
    assert_eq!(t["type"], "tree", "{r}");
    let roots = t["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{r}");
    let root = &roots[0];
    let paths = paths_stacks();
    assert_eq!(root["frame"], paths[0].0[0].as_str());
    assert_eq!(
        (root["objects"].as_u64(), root["bytes"].as_u64()),
        (Some(500), Some(27200))
    );
    let kids = root["children"].as_array().unwrap();
    assert_eq!(kids.len(), 2, "{r}");
    for (kid, (stack, objects, bytes)) in kids.iter().zip(&paths) {
        // Down the branch: a3 → a2 → a1 → main, each with the branch's whole count.
        let mut node = kid;
        for frame in &stack[1..] {
            assert_eq!(node["frame"], frame.as_str(), "{r}");
            assert_eq!(
                (node["objects"].as_u64(), node["bytes"].as_u64()),
                (Some(*objects), Some(*bytes))
            );
            match node["children"].as_array().unwrap().first() {
                Some(next) => node = next,
                None => break,
            }
        }
        // maxdepth 4 stops at main.
        assert_eq!(node["frame"], stack[4].as_str(), "{r}");
        assert!(node["children"].as_array().unwrap().is_empty(), "{r}");
    }

    // The same tree as text, in the print_tree form.
    let bin = workload("paths");
    let r = trace(
        &[
            "tree",
            "--site",
            "^make_node",
            "--maxdepth",
            "1",
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    let a3 = &paths[0].0[1];
    let b3 = &paths[1].0[1];
    let root = &paths[0].0[0];
    let first = format!("{root} [500, 26.56 KB]-+-{a3} [300, 14.06 KB]");
    let second = format!(
        "{}+-{b3} [200, 12.50 KB]",
        " ".repeat(first.find("-+-").unwrap() + 1)
    );
    assert_eq!(r.stdout, format!("{first}\n{second}\n"), "{r}");
}

#[test]
fn tree_of_one_block_by_address() {
    if !ebpf_available("tree_of_one_block_by_address") {
        return;
    }
    // Addresses differ per run, so pick one from the objects of a run with --save, then
    // root the tree at it offline.
    let dir = muppy_tests::scratch("tree");
    let snap = dir.join("paths.muppy");
    let bin = workload("paths");
    let r = trace(
        &[
            "objects",
            "--site",
            "b1",
            "--format",
            "json",
            "--save",
            snap.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(r.code, Some(0), "{r}");
    let objects = r.json();
    assert_eq!(objects.len(), 200, "{r}");
    let addr = objects[0]["addr"].as_str().unwrap().to_string();
    let t = trace(
        &[
            "tree",
            snap.to_str().unwrap(),
            "--addr",
            &addr,
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!(t.code, Some(0), "{t}");
    let root = &t.json()[0]["roots"][0];
    assert_eq!(root["frame"], addr.as_str());
    assert_eq!(
        (root["objects"].as_u64(), root["bytes"].as_u64()),
        (Some(1), Some(64))
    );
    let paths = paths_stacks();
    assert_eq!(root["children"][0]["frame"], paths[1].0[0].as_str());
    assert_eq!(
        root["children"][0]["children"][0]["frame"],
        paths[1].0[1].as_str()
    );
    let none = trace(&["tree", snap.to_str().unwrap(), "--addr", "0x1"], "");
    assert_eq!(none.code, Some(2));
    assert_eq!(none.stderr.lines().count(), 1, "{none}");
    let _ = std::fs::remove_dir_all(&dir);
}
