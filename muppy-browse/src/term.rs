//! The terminal: raw mode and the alternate screen while browsing, restored however the
//! browser ends (a key, an error, a panic); and the loop that reads keys and updates.

use std::{
    io::{self, Stdout},
    sync::mpsc::{Receiver, TryRecvError},
    time::Duration,
};

use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use crate::{
    Update,
    app::{App, Ask, Key},
    draw::draw,
};

/// Why the browser could not run.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// Standard input or output is not a terminal.
    #[error("browse needs a terminal: run it in one (ssh -t for a remote one)")]
    NotATerminal,
    /// The terminal failed.
    #[error("the terminal failed while {what}: {source}")]
    Terminal {
        /// What was under way.
        what: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn term(what: &'static str) -> impl Fn(io::Error) -> BrowseError {
    move |source| BrowseError::Terminal { what, source }
}

/// Puts the terminal back as it was: main screen, cooked mode, cursor shown. Safe to call
/// more than once.
pub fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Errs unless standard input and output are a terminal (check it before starting what
/// the browser would show).
pub fn check() -> Result<(), BrowseError> {
    use std::io::IsTerminal as _;
    if io::stdout().is_terminal() && io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(BrowseError::NotATerminal)
    }
}

/// The terminal in browsing state; dropping it restores the terminal.
struct Guard;

impl Guard {
    fn enter() -> Result<Self, BrowseError> {
        check()?;
        // A panic restores the terminal before its message is printed, or the message would
        // go to the alternate screen and vanish with it.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode().map_err(term("entering raw mode"))?;
        let guard = Guard;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
            .map_err(term("entering the alternate screen"))?;
        Ok(guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// A terminal key event as the browser's key, if it is one it knows.
fn key_of(k: KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Browses until the user quits (q, Ctrl-C): takes `updates` as they come (the tracer's heap
/// copies; a closed channel leaves the last one shown), redraws, and restores the terminal
/// before it returns.
pub fn run(
    mut app: App,
    updates: &Receiver<Update>,
    mut ask: impl FnMut(Ask),
) -> Result<(), BrowseError> {
    let _guard = Guard::enter()?;
    let mut t: Terminal<CrosstermBackend<Stdout>> =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(term("starting"))?;
    let mut open = true;
    let mut dirty = true;
    while !app.quit() {
        while open {
            match updates.try_recv() {
                Ok(u) => {
                    app.update(u);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if dirty {
            t.draw(|f| draw(&app, f)).map_err(term("drawing"))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(100)).map_err(term("reading keys"))? {
            match event::read().map_err(term("reading keys"))? {
                Event::Key(k) => {
                    if let Some(k) = key_of(k) {
                        app.key(k);
                        if let Some(a) = app.take_ask() {
                            ask(a);
                        }
                        dirty = true;
                    }
                }
                Event::Resize(..) => {
                    t.autoresize().map_err(term("resizing"))?;
                    dirty = true;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
