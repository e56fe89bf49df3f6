//! muppy's terminal browser: the summary, call trees, objects, leak kinds and referrers of a
//! heap, live or from a snapshot, drawn with ratatui over crossterm.
