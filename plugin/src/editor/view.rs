//! The editor drawn by egui from a copy of the model (on the window's
//! thread): the script bar (Open…, Reload, Edit, New from example), the
//! script's description, its controls (sliders, menus for choices, text
//! entry with units), Mix and Bypass, the status line and the log (newest
//! first, Copy, Clear). Drawing returns the actions the user asked for.

use std::collections::HashMap;
use std::path::PathBuf;

use egui::{Color32, RichText};
use outboard_engine::workers::script_log::LogLevel;

use super::browser::{Browser, Outcome};
use super::model::{Action, Control, ControlKind, EditorModel, LogKind};

const ERROR: Color32 = Color32::from_rgb(235, 110, 100);
const WARNING: Color32 = Color32::from_rgb(230, 190, 90);
const INFO: Color32 = Color32::from_rgb(150, 170, 190);
const ACCENT: Color32 = Color32::from_rgb(120, 190, 160);

/// What the view remembers between frames (the window's thread only).
pub struct ViewState {
    browser: Option<Browser>,
    /// Text being typed into a control's field, by parameter id.
    typing: HashMap<u32, String>,
    /// The control being dragged and its value (shown while the model
    /// catches up).
    dragging: Option<(u32, f64)>,
    /// Show info-level log entries too.
    show_info: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState { browser: None, typing: HashMap::new(), dragging: None, show_info: true }
    }
}

/// The editor's look.
pub fn style(ctx: &egui::Context) {
    ctx.set_visuals(egui::Visuals::dark());
}

/// Draws the model; returns the user's actions, in order.
pub fn draw(ui: &mut egui::Ui, model: &EditorModel, state: &mut ViewState) -> Vec<Action> {
    let mut actions = Vec::new();
    egui::Panel::top("outboard-script").show(ui, |ui| script_bar(ui, model, state, &mut actions));
    egui::Panel::bottom("outboard-status").show(ui, |ui| {
        ui.add_space(2.0);
        ui.label(RichText::new(model.status.line()).small().monospace());
        ui.add_space(2.0);
    });
    egui::Panel::bottom("outboard-log")
        .resizable(true)
        .default_size(220.0)
        .min_size(90.0)
        .show(ui, |ui| log_panel(ui, model, state, &mut actions));
    egui::CentralPanel::default().show(ui, |ui| {
        egui::ScrollArea::vertical().auto_shrink(false).show(ui, |ui| controls(ui, model, state, &mut actions));
    });
    if let Some(browser) = state.browser.as_mut() {
        match browser.show(ui.ctx()) {
            Outcome::Open => {}
            Outcome::Chosen(path) => {
                actions.push(Action::Open(path));
                state.browser = None;
            }
            Outcome::Cancelled => state.browser = None,
        }
    }
    actions
}

fn script_bar(ui: &mut egui::Ui, model: &EditorModel, state: &mut ViewState, actions: &mut Vec<Action>) {
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.label(RichText::new("Outboard").strong().color(ACCENT));
        ui.separator();
        ui.label(RichText::new(&model.script.name).strong());
        ui.weak(model.script.location_text());
    });
    ui.horizontal_wrapped(|ui| {
        if ui.button("Open…").on_hover_text("Choose a script file to follow").clicked() {
            state.browser = Some(Browser::new(&browser_start(model), places(model)));
        }
        if ui.button("Reload").on_hover_text("Load the script again").clicked() {
            actions.push(Action::Reload);
        }
        if ui.button("Edit").on_hover_text("Open the script in $VISUAL, $EDITOR or the desktop's editor").clicked() {
            actions.push(Action::Edit);
        }
        ui.menu_button("New from example", |ui| {
            let examples = model.examples();
            if examples.is_empty() {
                ui.weak("No examples found (scripts/ beside the plugin)");
            }
            for (name, path) in examples {
                if ui.button(&name).on_hover_text(path.display().to_string()).clicked() {
                    actions.push(Action::NewFromExample(name));
                    ui.close();
                }
            }
        });
    });
    if !model.script.description.is_empty() {
        let mut lines = model.script.description.lines();
        let first = lines.next().unwrap_or_default();
        let rest: Vec<&str> = lines.collect();
        if rest.iter().all(|l| l.trim().is_empty()) {
            ui.label(first);
        } else {
            egui::CollapsingHeader::new(first).id_salt("outboard-description").show(ui, |ui| {
                ui.label(rest.join("\n").trim());
            });
        }
    }
    ui.add_space(4.0);
}

/// Where the chooser opens: the script's folder, else the user's folder,
/// else home.
fn browser_start(model: &EditorModel) -> PathBuf {
    model
        .script
        .path()
        .and_then(|p| p.parent().map(PathBuf::from))
        .or_else(|| model.user_dir.clone().filter(|d| d.is_dir()))
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn places(model: &EditorModel) -> Vec<(String, PathBuf)> {
    let mut places = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        places.push(("Home".to_string(), PathBuf::from(home)));
    }
    if let Some(user) = model.user_dir.as_ref().filter(|d| d.is_dir()) {
        places.push(("My scripts".to_string(), user.clone()));
    }
    for (i, dir) in model.example_dirs.iter().enumerate() {
        let label = if i == 0 { "Examples".to_string() } else { format!("Examples {}", i + 1) };
        places.push((label, dir.clone()));
    }
    if let Some(dir) = model.script.path().and_then(|p| p.parent()) {
        places.push(("This script's folder".to_string(), dir.to_path_buf()));
    }
    places
}

fn controls(ui: &mut egui::Ui, model: &EditorModel, state: &mut ViewState, actions: &mut Vec<Action>) {
    ui.add_space(4.0);
    ui.spacing_mut().slider_width = (ui.available_width() - 300.0).clamp(160.0, 420.0);
    egui::Grid::new("outboard-controls").num_columns(3).spacing([12.0, 6.0]).striped(true).show(ui, |ui| {
        for control in model.mix.iter().chain(&model.bypass) {
            control_row(ui, control, state, actions);
        }
        if model.controls.is_empty() {
            ui.weak("The script declares no parameters (PARAMS).");
            ui.end_row();
        }
        for control in &model.controls {
            control_row(ui, control, state, actions);
        }
    });
}

fn control_row(ui: &mut egui::Ui, control: &Control, state: &mut ViewState, actions: &mut Vec<Action>) {
    ui.label(&control.name);
    let id = control.id;
    match &control.kind {
        ControlKind::Slider | ControlKind::Stepped => {
            let mut value = state.dragging.filter(|d| d.0 == id).map_or(control.value, |d| d.1);
            let mut slider = egui::Slider::new(&mut value, control.min..=control.max).show_value(false);
            if control.kind == ControlKind::Stepped {
                slider = slider.step_by(1.0);
            }
            let response = ui.add(slider);
            if response.drag_started() {
                actions.push(Action::BeginGesture(id));
                state.dragging = Some((id, value));
            }
            if response.changed() {
                actions.push(Action::SetParam { id, value });
                if let Some(dragging) = state.dragging.as_mut().filter(|d| d.0 == id) {
                    dragging.1 = value;
                }
            }
            if response.drag_stopped() {
                actions.push(Action::EndGesture(id));
                state.dragging = None;
            }
            if response.double_clicked() {
                actions.push(Action::SetParam { id, value: control.default });
            }
        }
        ControlKind::Choice(names) => {
            let current = control.value.round() as usize;
            let selected = names.get(current).cloned().unwrap_or_else(|| control.text.clone());
            let width = ui.spacing().slider_width;
            egui::ComboBox::from_id_salt(("outboard-choice", id)).width(width).selected_text(selected).show_ui(
                ui,
                |ui| {
                    for (i, name) in names.iter().enumerate() {
                        if ui.selectable_label(i == current, name).clicked() && i != current {
                            actions.push(Action::SetParam { id, value: i as f64 });
                        }
                    }
                },
            );
        }
        ControlKind::Switch => {
            let mut on = control.value >= 0.5;
            if ui.checkbox(&mut on, "").changed() {
                actions.push(Action::SetParam { id, value: if on { 1.0 } else { 0.0 } });
            }
        }
    }
    // The value as text; typing one sets it (with or without the unit).
    let mut text = state.typing.get(&id).cloned().unwrap_or_else(|| control.text.clone());
    let hint = if control.unit.is_empty() {
        "Type a value".to_string()
    } else {
        format!("Type a value (in {})", control.unit)
    };
    let field = ui.add(egui::TextEdit::singleline(&mut text).desired_width(110.0)).on_hover_text(hint);
    if field.has_focus() {
        state.typing.insert(id, text);
    } else if field.lost_focus() {
        state.typing.remove(&id);
        let escaped = ui.input(|i| i.key_pressed(egui::Key::Escape));
        if !escaped && text.trim() != control.text.trim() {
            actions.push(Action::SetParamText { id, text });
        }
    }
    ui.end_row();
}

fn log_panel(ui: &mut egui::Ui, model: &EditorModel, state: &mut ViewState, actions: &mut Vec<Action>) {
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.label(RichText::new("Log").strong());
        let errors = model.log.iter().filter(|e| e.level == LogLevel::Error).count();
        if errors > 0 {
            ui.colored_label(ERROR, format!("{errors} errors"));
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Clear").clicked() {
                actions.push(Action::ClearLog);
            }
            if ui.button("Copy").on_hover_text("Copy the log (newest first)").clicked() {
                ui.ctx().copy_text(model.log_text());
            }
            ui.checkbox(&mut state.show_info, "Info");
        });
    });
    ui.separator();
    egui::ScrollArea::vertical().auto_shrink(false).show(ui, |ui| {
        if model.log.is_empty() {
            ui.weak("Nothing logged.");
        }
        for entry in model.log.iter().filter(|e| state.show_info || e.level != LogLevel::Info) {
            let color = match entry.level {
                LogLevel::Error => ERROR,
                LogLevel::Warning => WARNING,
                LogLevel::Info => INFO,
            };
            let tag = match entry.kind {
                LogKind::Error => "error",
                LogKind::Script => "script",
                LogKind::Worker => "worker",
                LogKind::Plugin => "plugin",
            };
            let head = match (&entry.file, entry.line) {
                (Some(file), Some(line)) => format!("{file}:{line}  {}", entry.head()),
                (Some(file), None) => format!("{file}  {}", entry.head()),
                _ => entry.head().to_string(),
            };
            let rest: Vec<&str> = entry.text.lines().skip(1).collect();
            ui.horizontal_top(|ui| {
                ui.label(RichText::new(clock_time(entry.at)).monospace().small().weak());
                ui.label(RichText::new(format!("[{tag}]")).monospace().small().color(color));
                if rest.is_empty() {
                    ui.add(egui::Label::new(RichText::new(head).monospace().color(color)).wrap());
                } else {
                    egui::CollapsingHeader::new(RichText::new(head).monospace().color(color))
                        .id_salt(("outboard-log", entry.seq))
                        .show(ui, |ui| {
                            ui.add(egui::Label::new(RichText::new(rest.join("\n")).monospace().small()).wrap());
                        });
                }
            });
        }
    });
}

/// `HH:MM:SS` of `at`, in local time.
fn clock_time(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` it is given.
    let tm = unsafe {
        let mut tm = std::mem::zeroed::<libc::tm>();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}
