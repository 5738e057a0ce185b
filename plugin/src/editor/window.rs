//! The editor's window: the CLAP gui extension (X11, embedded in the
//! host's window or floating) and the timer-support extension, over a
//! baseview window drawn by egui (egui-baseview, OpenGL).
//!
//! What a host sees:
//!
//! - **APIs**: `x11`, embedded (preferred) or floating; nothing else.
//! - **Size**: X11 sizes are physical pixels: [`DEFAULT_SIZE`] logical
//!   pixels times the scale the host sets (`set_scale`, 1 by default);
//!   resizable both ways, down to [`MIN_SIZE`], any aspect ratio.
//! - **Lifecycle**: `create` starts nothing but the host timer; the window
//!   (and its thread, its X connection and its OpenGL context) is made at
//!   `set_parent` (embedded) or at the first `show` (floating: titled as
//!   the host suggested, and kept above the window `set_transient` named,
//!   WM_TRANSIENT_FOR), and all of it goes at `destroy`, which joins the
//!   window's thread: open and close leave no thread, descriptor or timer
//!   behind. (baseview 0.4.2 itself leaks each window's xkbcommon keymap,
//!   about 60 KiB per opening; see the crate's `wrappers/xkbcommon.rs`.)
//! - **Timer**: while the window exists, a host timer
//!   ([`TIMER_PERIOD_MS`]) refreshes the model. A host without
//!   timer-support still works: the window asks for main-thread callbacks
//!   itself, every [`FALLBACK_REFRESH`].
//! - **Callbacks**: baseview runs the X11 window's events on its own
//!   thread; what it must tell the host (a resize request, the window gone)
//!   comes back through `request_callback` and is told from
//!   `on_main_thread`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clack_extensions::gui::{
    AspectRatioStrategy, GuiApiType, GuiConfiguration, GuiResizeHints, GuiSize, PluginGuiImpl, Window as ParentWindow,
};
use clack_extensions::timer::{HostTimer, PluginTimerImpl, TimerId};
use clack_plugin::prelude::*;
use clap_sys::ext::gui::{CLAP_EXT_GUI, clap_host_gui};
use clap_sys::host::clap_host;
use egui_baseview::baseview::dpi::{PhysicalSize, Size};
use egui_baseview::baseview::host::{Host, HostCallbacks, HostMainThreadCaller};
use egui_baseview::baseview::{HandlerError, Window, WindowSize};
use egui_baseview::{EguiWindow, EguiWindowSettings, Frame, KeyCapture, RepaintNotifier};

use super::model::EditorModel;
use super::{EditorHandle, Watch, view};
use crate::OutboardMainThread;

/// The window's size at scale 1, in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (760, 620);
/// The smallest size at scale 1.
pub const MIN_SIZE: (u32, u32) = (480, 360);
/// How often the host's timer refreshes the model while the window is open.
pub const TIMER_PERIOD_MS: u32 = 50;
/// How often the window asks for a refresh where the host has no timer.
pub const FALLBACK_REFRESH: Duration = Duration::from_millis(100);

/// The gui between the host's `create` and `destroy` (main thread).
pub struct Gui {
    floating: bool,
    scale: f64,
    /// Physical pixels.
    size: GuiSize,
    title: String,
    /// The host's window a floating editor stays above (X11 window id).
    transient_for: Option<u32>,
    window: Option<Window>,
    timer: Option<TimerId>,
    /// Keeps the model fresh while the gui exists.
    _watch: Watch,
}

/// The editor's threads (baseview's window thread and those the OpenGL
/// driver starts for it: Mesa's software renderer compiles shaders and
/// rasterises on threads of its own) run at SCHED_IDLE: they take a core
/// only when the audio threads and the script workers leave it idle, so an
/// editor opened on a busy machine costs the scripts no late results.
/// The window thread lowers itself first thing in its handler's `build`
/// (see `EditorApp::build`), before its event loop draws a frame, and the
/// threads it starts from then on inherit the policy. The threads started
/// while the window and its GL context were made, before that, are those
/// that appeared while the (synchronous) opening ran: lowered right after
/// it, from the main thread (`open_window`), if they run at the normal
/// policy and are not Outboard's own (by name). No other thread of the
/// host's is touched, nor one the host started meanwhile at realtime
/// priority.
fn lower_threads_since(before: &[i32]) {
    for tid in thread_ids().into_iter().filter(|tid| !before.contains(tid)) {
        // SAFETY: sched_getscheduler only reads the policy of `tid`, a
        // thread of this process (it may have ended since: then it fails).
        let normal = unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_OTHER;
        let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        if normal && !name.starts_with("outboard") {
            lower_to_idle(tid);
        }
    }
}

/// Puts thread `tid` of this process (0: the calling thread) at SCHED_IDLE.
fn lower_to_idle(tid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param`; `tid` is a thread of this
    // process or 0 (it may have ended since: then it fails, harmlessly).
    unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
}

/// This process's threads.
fn thread_ids() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

impl Gui {
    fn min_size(&self) -> GuiSize {
        GuiSize { width: scaled(MIN_SIZE.0, self.scale), height: scaled(MIN_SIZE.1, self.scale) }
    }
}

fn scaled(pixels: u32, scale: f64) -> u32 {
    (f64::from(pixels) * scale).round().max(1.0) as u32
}

/// Whether a window can be opened here: an X display is named.
fn x11_available() -> bool {
    cfg!(target_os = "linux") && std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
}

impl PluginGuiImpl for OutboardMainThread<'_> {
    fn is_api_supported(&self, configuration: GuiConfiguration) -> bool {
        cfg!(target_os = "linux") && configuration.api_type == GuiApiType::X11
    }

    fn get_preferred_api(&self) -> Option<GuiConfiguration<'_>> {
        cfg!(target_os = "linux").then_some(GuiConfiguration { api_type: GuiApiType::X11, is_floating: false })
    }

    fn create(&self, configuration: GuiConfiguration) -> Result<(), PluginError> {
        if !self.is_api_supported(configuration) {
            return Err(PluginError::Message("the editor supports X11 only"));
        }
        if self.gui.borrow().is_some() {
            return Err(PluginError::Message("the editor exists already"));
        }
        if !x11_available() {
            return Err(PluginError::Message("no X display ($DISPLAY is not set)"));
        }
        let watch = self.editor.watch();
        let timer =
            self.host.get_extension::<HostTimer>().and_then(|t| t.register_timer(&self.host, TIMER_PERIOD_MS).ok());
        self.editor.set_timer(timer.is_some());
        *self.gui.borrow_mut() = Some(Gui {
            floating: configuration.is_floating,
            scale: 1.0,
            size: GuiSize { width: DEFAULT_SIZE.0, height: DEFAULT_SIZE.1 },
            title: String::from("Outboard"),
            transient_for: None,
            window: None,
            timer,
            _watch: watch,
        });
        // The model, now: the first frame shows the instance as it is.
        self.serve_editor();
        Ok(())
    }

    fn destroy(&self) {
        self.close_gui();
    }

    fn set_scale(&self, scale: f64) -> Result<(), PluginError> {
        let mut gui = self.gui.borrow_mut();
        let gui = gui.as_mut().ok_or(PluginError::Message("no editor"))?;
        if !(scale.is_finite() && (0.25..=8.0).contains(&scale)) {
            return Err(PluginError::Message("unusable scale"));
        }
        let was = gui.scale;
        gui.scale = scale;
        gui.size = GuiSize {
            width: (f64::from(gui.size.width) * scale / was).round() as u32,
            height: (f64::from(gui.size.height) * scale / was).round() as u32,
        };
        if let Some(window) = &gui.window {
            let _ = window.suggest_fallback_scale_factor(scale);
        }
        Ok(())
    }

    fn get_size(&self) -> Option<GuiSize> {
        let gui = self.gui.borrow();
        let gui = gui.as_ref()?;
        Some(match &gui.window {
            Some(window) => {
                let size = window.size().physical;
                GuiSize { width: size.width, height: size.height }
            }
            None => gui.size,
        })
    }

    fn can_resize(&self) -> bool {
        true
    }

    fn get_resize_hints(&self) -> Option<GuiResizeHints> {
        Some(GuiResizeHints {
            can_resize_horizontally: true,
            can_resize_vertically: true,
            strategy: AspectRatioStrategy::Disregard,
        })
    }

    fn adjust_size(&self, size: GuiSize) -> Option<GuiSize> {
        let gui = self.gui.borrow();
        let min = gui.as_ref().map_or(GuiSize { width: MIN_SIZE.0, height: MIN_SIZE.1 }, Gui::min_size);
        Some(GuiSize { width: size.width.max(min.width), height: size.height.max(min.height) })
    }

    fn set_size(&self, size: GuiSize) -> Result<(), PluginError> {
        let mut gui = self.gui.borrow_mut();
        let gui = gui.as_mut().ok_or(PluginError::Message("no editor"))?;
        let min = gui.min_size();
        let size = GuiSize { width: size.width.max(min.width), height: size.height.max(min.height) };
        gui.size = size;
        if let Some(window) = &gui.window {
            window
                .resize(PhysicalSize::new(size.width, size.height))
                .map_err(|_| PluginError::Message("the window could not be resized"))?;
        }
        Ok(())
    }

    fn set_parent(&self, parent: ParentWindow) -> Result<(), PluginError> {
        let mut gui = self.gui.borrow_mut();
        let gui = gui.as_mut().ok_or(PluginError::Message("no editor"))?;
        if gui.floating {
            return Err(PluginError::Message("a floating editor has no parent"));
        }
        if parent.as_x11_handle().is_none_or(|id| id == 0) {
            return Err(PluginError::Message("the parent is not an X11 window"));
        }
        if let Some(window) = &gui.window {
            return window.set_parent(&parent).map_err(|_| PluginError::Message("the editor could not be reparented"));
        }
        gui.window = Some(self.open_window(gui, Some(&parent))?);
        Ok(())
    }

    fn set_transient(&self, window: ParentWindow) -> Result<(), PluginError> {
        let mut gui = self.gui.borrow_mut();
        let gui = gui.as_mut().ok_or(PluginError::Message("no editor"))?;
        let id = window.as_x11_handle().and_then(|id| u32::try_from(id).ok()).filter(|&id| id != 0);
        let id = id.ok_or(PluginError::Message("the window is not an X11 window"))?;
        // Told to the window manager when the window is made (at `show`).
        gui.transient_for = Some(id);
        Ok(())
    }

    fn suggest_title(&self, title: &str) {
        if let Some(gui) = self.gui.borrow_mut().as_mut() {
            gui.title = title.to_string();
        }
    }

    fn show(&self) -> Result<(), PluginError> {
        let mut gui = self.gui.borrow_mut();
        let gui = gui.as_mut().ok_or(PluginError::Message("no editor"))?;
        if gui.window.is_none() {
            if !gui.floating {
                return Err(PluginError::Message("an embedded editor needs its parent first"));
            }
            gui.window = Some(self.open_window(gui, None)?);
        }
        let window = gui.window.as_ref().expect("opened above");
        window.show().map_err(|_| PluginError::Message("the editor could not be shown"))
    }

    fn hide(&self) -> Result<(), PluginError> {
        let gui = self.gui.borrow();
        match gui.as_ref().and_then(|g| g.window.as_ref()) {
            Some(window) => window.hide().map_err(|_| PluginError::Message("the editor could not be hidden")),
            None => Ok(()),
        }
    }
}

impl PluginTimerImpl for OutboardMainThread<'_> {
    fn on_timer(&self, timer_id: TimerId) {
        let ours = self.gui.borrow().as_ref().is_some_and(|g| g.timer == Some(timer_id));
        if ours {
            self.serve_window();
            self.serve_editor();
        }
    }
}

impl OutboardMainThread<'_> {
    /// Makes the editor's window: baseview's thread starts, egui draws.
    fn open_window(&self, gui: &Gui, parent: Option<&ParentWindow>) -> Result<Window, PluginError> {
        let notifier = RepaintNotifier::new();
        let mut settings = EguiWindowSettings::new()
            .with_title(gui.title.clone())
            .with_size(Size::Physical(PhysicalSize::new(gui.size.width, gui.size.height)))
            .with_min_size(Some(Size::Physical(PhysicalSize::new(gui.min_size().width, gui.min_size().height))))
            .with_resizable(true)
            .with_fallback_scale_factor(gui.scale)
            .with_repaint_notifier(notifier.clone());
        if let Some(parent) = parent {
            settings = settings.with_parent(parent);
        }
        let host = Host::new()
            .with_main_thread(CallBack(RawHost(self.host.as_raw())))
            .with_callbacks(HostWindow(self.host.as_raw()));
        let mut app = EditorApp::new(self.editor.clone());
        app.transient_for = if parent.is_none() { gui.transient_for } else { None };
        let before = thread_ids();
        let window = EguiWindow::create_with_host(settings, app, Some(host)).map_err(|e| {
            self.say(
                outboard_engine::workers::script_log::LogLevel::Error,
                &format!("outboard: the editor's window could not be opened: {e}"),
            );
            PluginError::Message("the editor's window could not be opened")
        })?;
        lower_threads_since(&before);
        self.editor.set_repaint(Some(Box::new(move || notifier.request_repaint())));
        Ok(window)
    }

    /// Tells the host what the window's thread asked for (a resize, the
    /// window gone). Main thread.
    pub(crate) fn serve_window(&self) {
        // Out of the cell while the host hears it: a host may destroy the
        // gui from inside `closed`.
        let Some(window) = self.gui.borrow_mut().as_mut().and_then(|g| g.window.take()) else { return };
        window.host_main_thread_callback();
        if let Some(gui) = self.gui.borrow_mut().as_mut()
            && gui.window.is_none()
        {
            gui.window = Some(window);
        }
    }

    /// Closes the window (joining its thread) and stops the timer.
    pub(crate) fn close_gui(&self) {
        let Some(mut gui) = self.gui.borrow_mut().take() else { return };
        self.editor.set_repaint(None);
        drop(gui.window.take());
        // What the window asked for last is done, and a drag its closing
        // cut short still ends for the host.
        let moved = self.apply_actions();
        if self.editor_side.borrow_mut().end_gestures() || moved {
            self.request_param_flush();
        }
        if let Some(timer) = gui.timer.take()
            && let Some(host_timer) = self.host.get_extension::<HostTimer>()
        {
            let _ = host_timer.unregister_timer(&self.host, timer);
        }
        self.editor.set_timer(false);
        drop(gui);
        self.shared.meters.set_measuring(self.editor.watched());
        // The window's thread allocated in a malloc arena of its own (glibc
        // gives each new thread one, up to 8 per core) and freed it all on
        // its way out; give those pages back, or every opening looks like
        // a leak until the arenas run out.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// A host pointer the window's thread may use.
struct RawHost(*const clap_host);

// SAFETY: only CLAP's thread-safe `request_callback` is called through it,
// from the window's thread, which `close_gui` joins (dropping the window)
// before the instance, and so the host's `clap_host`, may go.
unsafe impl Send for RawHost {}

/// baseview's way to reach the main thread: the host's callback.
struct CallBack(RawHost);

impl HostMainThreadCaller for CallBack {
    fn call_main_thread(&mut self) {
        // SAFETY: see RawHost.
        unsafe {
            if let Some(request) = (*self.0.0).request_callback {
                request(self.0.0);
            }
        }
    }
}

/// What the window tells the host (on the main thread, from
/// `serve_window`): a resize it wants, or that it is gone.
struct HostWindow(*const clap_host);

impl HostWindow {
    fn gui(&self) -> Option<&clap_host_gui> {
        // SAFETY: the host is valid while the window lives (the window is
        // dropped before the instance); get_extension is a main-thread
        // call, and these callbacks run on the main thread.
        unsafe {
            let get = (*self.0).get_extension?;
            (get(self.0, CLAP_EXT_GUI.as_ptr()) as *const clap_host_gui).as_ref()
        }
    }
}

impl HostCallbacks for HostWindow {
    fn request_resize(&mut self, new_size: WindowSize) -> Result<(), HandlerError> {
        let size = new_size.physical;
        let resized = self
            .gui()
            .and_then(|gui| gui.request_resize)
            // SAFETY: the host's own function, on the main thread.
            .is_some_and(|request| unsafe { request(self.0, size.width, size.height) });
        if resized { Ok(()) } else { Err(HandlerError::from(std::fmt::Error)) }
    }

    fn destroyed(&mut self) {
        if let Some(closed) = self.gui().and_then(|gui| gui.closed) {
            // SAFETY: the host's own function, on the main thread.
            unsafe { closed(self.0, true) };
        }
    }
}

/// The egui app on the window's thread: draws a copy of the model, queues
/// what the user does.
struct EditorApp {
    handle: Arc<EditorHandle>,
    model: EditorModel,
    seen: u64,
    view: view::ViewState,
    last_wake: Instant,
    /// Floating: the host's window to stay above.
    transient_for: Option<u32>,
}

impl EditorApp {
    fn new(handle: Arc<EditorHandle>) -> EditorApp {
        EditorApp {
            handle,
            model: EditorModel::default(),
            seen: 0,
            view: view::ViewState::default(),
            last_wake: Instant::now(),
            transient_for: None,
        }
    }
}

impl egui_baseview::App for EditorApp {
    fn build(&mut self, egui_ctx: egui::Context, frame: &mut Frame) -> Result<(), HandlerError> {
        // The window's thread, before its first frame: the threads the GL
        // driver starts to draw it inherit this (see `lower_threads_since`).
        lower_to_idle(0);
        view::style(&egui_ctx);
        frame.set_clear_color(egui::Rgba::from_gray(0.08));
        if let Some(parent) = self.transient_for {
            // Before the window is mapped: the window manager keeps it
            // above the host's. Best effort (a failure costs only that).
            let _ = set_transient_for(frame.baseview_window(), parent);
        }
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut Frame) {
        if let Some(model) = self.handle.snapshot_if_changed(self.seen) {
            self.seen = model.generation;
            self.model = model;
        }
        let actions = view::draw(ui, &self.model, &mut self.view);
        self.handle.act_all(actions);
        // Keys are the host's (its transport, its shortcuts) unless a
        // field of the editor is being typed into (where the platform
        // passes keys on: not X11).
        let typing = ui.ctx().egui_wants_keyboard_input();
        frame.set_key_capture(if typing { KeyCapture::CaptureAll } else { KeyCapture::IgnoreAll });
        if !self.handle.has_timer() {
            // No host timer: the window keeps the model fresh itself.
            if self.last_wake.elapsed() >= FALLBACK_REFRESH {
                self.last_wake = Instant::now();
                self.handle.wake();
            }
            ui.ctx().request_repaint_after(FALLBACK_REFRESH);
        }
    }
}

/// Marks `window` transient for the X11 window `parent` (WM_TRANSIENT_FOR),
/// over a connection of its own, closed on return.
fn set_transient_for(window: &impl raw_window_handle::HasWindowHandle, parent: u32) -> Result<(), String> {
    use raw_window_handle::RawWindowHandle;
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::{AtomEnum, PropMode};
    use x11rb::wrapper::ConnectionExt as _;
    let id = match window.window_handle().map_err(|e| e.to_string())?.as_raw() {
        RawWindowHandle::Xcb(handle) => handle.window.get(),
        RawWindowHandle::Xlib(handle) => u32::try_from(handle.window).map_err(|e| e.to_string())?,
        _ => return Err("not an X11 window".into()),
    };
    let (connection, _) = x11rb::rust_connection::RustConnection::connect(None).map_err(|e| e.to_string())?;
    connection
        .change_property32(PropMode::REPLACE, id, AtomEnum::WM_TRANSIENT_FOR, AtomEnum::WINDOW, &[parent])
        .map_err(|e| e.to_string())?
        .check()
        .map_err(|e| e.to_string())?;
    connection.flush().map_err(|e| e.to_string())
}
