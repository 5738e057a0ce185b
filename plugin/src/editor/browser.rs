//! A small file chooser drawn by egui: folders and `*.py` files, up and
//! down, a few places (home, the user's script folder, the examples, the
//! current script's folder) and a path to type. It needs no desktop portal
//! and no other program (no rfd, no zenity): a DAW on a bare X server can
//! open scripts. It runs on the window's thread (its folder reads are the
//! window's, never the main or the audio thread's).

use std::path::{Path, PathBuf};

/// One line of a folder's listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Folders sort before files.
    pub is_dir: bool,
    /// The file or folder name as shown (lossily converted to UTF-8).
    pub name: String,
    /// Its full path.
    pub path: PathBuf,
}

/// A folder's sub-folders and Python files, folders first, each sorted by
/// name (case-insensitively); hidden ones (a leading dot) left out unless
/// `hidden`.
pub fn list(dir: &Path, hidden: bool) -> Result<Vec<Entry>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out: Vec<Entry> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && !hidden {
                return None;
            }
            let path = entry.path();
            // Follows links: a linked folder is a folder.
            let is_dir = path.is_dir();
            let is_script = !is_dir && path.extension().is_some_and(|e| e == "py");
            (is_dir || is_script).then_some(Entry { is_dir, name, path })
        })
        .collect();
    out.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase())));
    Ok(out)
}

/// What the chooser came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Still choosing.
    Open,
    /// The user chose this file (double-clicked, opened, or typed a path to an existing file).
    Chosen(PathBuf),
    /// The user closed the chooser or pressed Cancel.
    Cancelled,
}

/// The chooser's state.
pub struct Browser {
    dir: PathBuf,
    entries: Result<Vec<Entry>, String>,
    /// Shortcuts: (label, folder).
    places: Vec<(String, PathBuf)>,
    selected: Option<PathBuf>,
    /// What the path field holds.
    typed: String,
    hidden: bool,
}

impl Browser {
    /// A chooser in `start` (or the nearest folder above it that exists).
    pub fn new(start: &Path, places: Vec<(String, PathBuf)>) -> Browser {
        let mut dir = start.to_path_buf();
        while !dir.is_dir() {
            match dir.parent() {
                Some(up) => dir = up.to_path_buf(),
                None => {
                    dir = PathBuf::from("/");
                    break;
                }
            }
        }
        let mut browser = Browser {
            dir: PathBuf::new(),
            entries: Ok(Vec::new()),
            places,
            selected: None,
            typed: String::new(),
            hidden: false,
        };
        browser.enter(dir);
        browser
    }

    /// The folder being shown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shown folder's listing (see [`list`]); empty when it could not be read.
    pub fn entries(&self) -> &[Entry] {
        self.entries.as_deref().unwrap_or(&[])
    }

    /// Goes into `dir` (listing it).
    pub fn enter(&mut self, dir: PathBuf) {
        self.entries = list(&dir, self.hidden);
        self.typed = dir.display().to_string();
        self.dir = dir;
        self.selected = None;
    }

    /// Goes to the parent folder.
    pub fn up(&mut self) {
        if let Some(parent) = self.dir.parent() {
            self.enter(parent.to_path_buf());
        }
    }

    /// What a typed path means: a folder to enter or a script to choose.
    pub fn go_to_typed(&mut self) -> Outcome {
        let typed = PathBuf::from(self.typed.trim());
        let typed = if typed.is_relative() { self.dir.join(typed) } else { typed };
        if typed.is_dir() {
            self.enter(typed);
            Outcome::Open
        } else if typed.is_file() {
            Outcome::Chosen(typed)
        } else {
            self.entries = Err(format!("{} does not exist", typed.display()));
            Outcome::Open
        }
    }

    /// Draws the chooser as a window over `ctx`; returns what came of it.
    pub fn show(&mut self, ctx: &egui::Context) -> Outcome {
        let mut outcome = Outcome::Open;
        let mut open = true;
        egui::Window::new("Open a script")
            .open(&mut open)
            .collapsible(false)
            .default_size([520.0, 420.0])
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| outcome = self.contents(ui));
        if !open { Outcome::Cancelled } else { outcome }
    }

    fn contents(&mut self, ui: &mut egui::Ui) -> Outcome {
        let mut outcome = Outcome::Open;
        let mut go: Option<PathBuf> = None;
        ui.horizontal_wrapped(|ui| {
            if ui.button("Up").on_hover_text("The folder above").clicked() {
                go = self.dir.parent().map(Path::to_path_buf);
            }
            for (label, place) in &self.places {
                if ui.button(label).on_hover_text(place.display().to_string()).clicked() {
                    go = Some(place.clone());
                }
            }
        });
        ui.horizontal(|ui| {
            ui.label("Path:");
            let field = ui.add(egui::TextEdit::singleline(&mut self.typed).desired_width(f32::INFINITY));
            if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                outcome = self.go_to_typed();
            }
        });
        ui.separator();
        let footer = 32.0;
        egui::ScrollArea::vertical().max_height((ui.available_height() - footer).max(60.0)).auto_shrink(false).show(
            ui,
            |ui| match &self.entries {
                Err(why) => {
                    ui.colored_label(egui::Color32::from_rgb(230, 110, 100), why);
                }
                Ok(entries) if entries.is_empty() => {
                    ui.weak("No folders or Python scripts here.");
                }
                Ok(entries) => {
                    for entry in entries {
                        let label = if entry.is_dir { format!("{}/", entry.name) } else { entry.name.clone() };
                        let selected = self.selected.as_ref() == Some(&entry.path);
                        let row = ui.selectable_label(selected, label);
                        if row.double_clicked() {
                            if entry.is_dir {
                                go = Some(entry.path.clone());
                            } else {
                                outcome = Outcome::Chosen(entry.path.clone());
                            }
                        } else if row.clicked() {
                            if entry.is_dir {
                                go = Some(entry.path.clone());
                            } else {
                                self.selected = Some(entry.path.clone());
                            }
                        }
                    }
                }
            },
        );
        ui.separator();
        ui.horizontal(|ui| {
            if ui.checkbox(&mut self.hidden, "Hidden files").changed() {
                go = Some(self.dir.clone());
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Cancel").clicked() {
                    outcome = Outcome::Cancelled;
                }
                let open = ui.add_enabled(self.selected.is_some(), egui::Button::new("Open"));
                if open.clicked()
                    && let Some(path) = self.selected.clone()
                {
                    outcome = Outcome::Chosen(path);
                }
            });
        });
        if let Some(dir) = go {
            self.enter(dir);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_come_first_then_scripts_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("outboard-browser-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b_folder")).unwrap();
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
        std::fs::write(dir.join("a.py"), "").unwrap();
        std::fs::write(dir.join("C.py"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let names: Vec<String> = list(&dir, false).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["b_folder", "a.py", "C.py"]);
        assert_eq!(list(&dir, true).unwrap().len(), 4);

        let mut browser = Browser::new(&dir.join("b_folder").join("missing.py"), Vec::new());
        assert_eq!(browser.dir(), dir.join("b_folder"));
        browser.up();
        assert_eq!(browser.dir(), dir);
        assert_eq!(browser.entries().len(), 3);
        browser.typed = "a.py".into();
        assert_eq!(browser.go_to_typed(), Outcome::Chosen(dir.join("a.py")));
        browser.typed = "b_folder".into();
        assert_eq!(browser.go_to_typed(), Outcome::Open);
        assert_eq!(browser.dir(), dir.join("b_folder"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
