//! Keys to actions (pure: a key event in, an [`Action`] out; the footer's help text is here too
//! so that it cannot drift from the map).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{FilterKind, SortKey};

/// What a key asks the view to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Sort by this key (the current one again: reverse the order).
    Sort(SortKey),
    /// Next grouping: connections, by process, by remote service.
    Group,
    /// Totals or the interval's amounts.
    Amounts,
    /// Open the prompt of this filter.
    Filter(FilterKind),
    ClearFilters,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    /// In the prompt: a character, delete one, apply, cancel.
    Input(char),
    Backspace,
    Submit,
    Cancel,
}

/// The keys of the normal mode, for the footer.
pub const HELP: &str = "q quit  sort: t throughput b bytes r retransmits l rtt a age (again: reverse)  \
g group  d deltas/totals  filter: p pid o port / text  Esc clear  ↑↓ PgUp PgDn select";

/// The action of `key`; `prompting` when a filter prompt is open (then characters are input).
pub fn action(key: KeyEvent, prompting: bool) -> Option<Action> {
    // Key releases (reported by terminals with the kitty protocol) are not presses.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Raw mode turns off the terminal's SIGINT: Ctrl-C quits from here.
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c' | 'C')).then_some(Action::Quit);
    }
    if prompting {
        return match key.code {
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Esc => Some(Action::Cancel),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char(c) => Some(Action::Input(c)),
            _ => None,
        };
    }
    let action = match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('t') => Action::Sort(SortKey::Throughput),
        KeyCode::Char('b') => Action::Sort(SortKey::Bytes),
        KeyCode::Char('r') => Action::Sort(SortKey::Retransmits),
        KeyCode::Char('l') => Action::Sort(SortKey::Rtt),
        KeyCode::Char('a') => Action::Sort(SortKey::Age),
        KeyCode::Char('g') => Action::Group,
        KeyCode::Char('d') => Action::Amounts,
        KeyCode::Char('p') => Action::Filter(FilterKind::Pid),
        KeyCode::Char('o') => Action::Filter(FilterKind::Port),
        KeyCode::Char('/') => Action::Filter(FilterKind::Text),
        KeyCode::Esc => Action::ClearFilters,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown | KeyCode::Char(' ') => Action::PageDown,
        KeyCode::Home => Action::Home,
        KeyCode::End => Action::End,
        _ => return None,
    };
    Some(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn normal_keys() {
        let cases = [
            (KeyCode::Char('q'), Action::Quit),
            (KeyCode::Char('b'), Action::Sort(SortKey::Bytes)),
            (KeyCode::Char('l'), Action::Sort(SortKey::Rtt)),
            (KeyCode::Char('g'), Action::Group),
            (KeyCode::Char('d'), Action::Amounts),
            (KeyCode::Char('/'), Action::Filter(FilterKind::Text)),
            (KeyCode::Esc, Action::ClearFilters),
            (KeyCode::Down, Action::Down),
        ];
        for (code, want) in cases {
            assert_eq!(action(press(code), false), Some(want), "{code:?}");
        }
        assert_eq!(action(press(KeyCode::Char('z')), false), None);
    }

    #[test]
    fn the_prompt_takes_characters_and_ctrl_c_always_quits() {
        assert_eq!(
            action(press(KeyCode::Char('q')), true),
            Some(Action::Input('q'))
        );
        assert_eq!(action(press(KeyCode::Esc), true), Some(Action::Cancel));
        assert_eq!(action(press(KeyCode::Enter), true), Some(Action::Submit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(ctrl_c, true), Some(Action::Quit));
        assert_eq!(action(ctrl_c, false), Some(Action::Quit));
        let ctrl_x = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::CONTROL);
        assert_eq!(action(ctrl_x, false), None);
        let mut release = press(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release, false), None);
    }
}
