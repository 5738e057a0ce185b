//! The plugin's editor, opened the way a DAW opens it: the host side of the
//! CLAP gui extension on X11 (`outboard-host --gui SECONDS`,
//! `--gui-cycles N`).
//!
//! Opening, in the CLAP order: `is_api_supported("x11", false)` →
//! `create("x11", false)` → `get_size` (→ `adjust_size`/`set_size` where
//! the plugin can resize) → a top-level X11 window of that size, the host's
//! ("parent"), mapped → `set_parent(parent)` → `show`. A plugin that only
//! floats gets `create("x11", true)` → `set_transient(parent)` →
//! `suggest_title` → `show` instead (`--gui-floating` asks for that even
//! where embedding is supported). Closing: `hide` → `destroy` → the parent
//! window destroyed.
//!
//! While the editor is open the main thread serves a main loop: the
//! instances' `on_main_thread` callbacks, timers and file descriptors
//! ([`crate::Instance::service_main_thread`]), the gui extension's requests
//! (a `request_resize` resizes the parent window; `request_show`,
//! `request_hide` are carried out; `closed(destroyed)` ends the session with
//! a `destroy`), and this host's own X11 events, every 2 ms.
//!
//! Screenshots: the pixels of the parent window's area of the screen
//! (embedded; the whole screen where the editor floats), read with
//! `GetImage` (ZPixmap) from the root window, as what is on the screen,
//! the plugin's window included. A screenshot with fewer than
//! [`BLANK_BELOW`] distinct colours is *blank*; the first screenshot that
//! is not counts as the editor's first frame. The parent's own area before
//! `set_parent` (one background colour) is the control.
//!
//! While the session lasts, the main thread runs at nice [`GUI_NICE`] and,
//! where permitted, SCHED_IDLE (the threads the plugin starts for its window
//! inherit it; Outboard's own editor lowers its threads to SCHED_IDLE
//! itself) and the memory the
//! process maps from then on is not locked (see `run.rs`,
//! `lock_current_memory_only`): what the instances use stays locked.
//!
//! The host's X11 connection is x11rb's pure-Rust one (no libxcb), opened
//! before the plugin is loaded (so a missing `$DISPLAY` fails at once) and
//! kept until the run ends: the process counts (`fds`, `threads`,
//! `rss_kib`) taken around the editor's opening and closing include it on
//! both sides.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clack_extensions::gui::{GuiApiType, GuiConfiguration, GuiSize, PluginGui, Window};
use serde_json::{Value, json};
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateWindowAux, EventMask, ImageFormat, ImageOrder, PropMode,
    WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use crate::handlers::GuiClosed;
use crate::plugin_instance::Instance;

/// A screenshot with fewer distinct colours than this is blank (a window
/// of one background colour has 1; egui's text, antialiased, gives dozens).
pub const BLANK_BELOW: usize = 16;

/// The parent window's size when the plugin does not give one.
pub const DEFAULT_SIZE: (u32, u32) = (640, 480);

/// The parent window's background: a colour an editor is unlikely to paint
/// everywhere.
pub const PARENT_BACKGROUND: u32 = 0x0030_3030;

/// How often the main loop runs while the editor is open.
pub const LOOP_PERIOD: Duration = Duration::from_millis(2);

/// How long one opening waits for the editor's first frame (`--gui`; with
/// `--gui-cycles`, after one opening drew nothing in that time, the rest are
/// held open [`CYCLE_NO_FRAME_HOLD`] each and not waited for).
pub const CYCLE_FRAME_LIMIT: Duration = Duration::from_secs(10);
/// With `--gui-cycles`, how long each of the remaining openings is held once one drew no frame within
/// [`CYCLE_FRAME_LIMIT`] (they are not waited for).
pub const CYCLE_NO_FRAME_HOLD: Duration = Duration::from_millis(100);

/// The nice value of the main thread while the editor is open (and so of
/// the threads the plugin starts for its window then, which inherit it):
/// the editor's drawing runs below the scripts' workers (nice -10), as a
/// DAW's GUI runs below its audio. (Software OpenGL under Xvfb costs a
/// good part of a core; at nice 0 it delays the workers' wake-ups.)
pub const GUI_NICE: i32 = 10;

/// How often the screen is read while waiting for the first frame (a read
/// costs the host and the X server a few milliseconds of CPU: not too often,
/// or the editor's host, not its plugin, loads the machine).
pub const FRAME_POLL: Duration = Duration::from_millis(50);

/// After the editor closes, the main loop is served until the process's
/// descriptors and threads are back to what they were before it opened, for
/// at most this long (a plugin may end its window thread asynchronously).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// What to do with the editor during a run.
#[derive(Clone, Debug, PartialEq)]
pub struct GuiConfig {
    /// Open once for a while, or open and close repeatedly.
    pub mode: GuiMode,
    /// Write the last screenshot here (PNG).
    pub screenshot: Option<PathBuf>,
    /// Ask for a floating window even where the plugin can embed.
    pub floating: bool,
}

/// How the editor is opened during a run: once (`--gui`) or in cycles (`--gui-cycles`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GuiMode {
    /// `--gui SECONDS`: open once, serve the main loop this long after the
    /// editor's first frame (or after [`CYCLE_FRAME_LIMIT`] without one),
    /// take the screenshot, close. Says on stderr when it opened and when
    /// the first frame came (`outboard-host: editor: first frame after N ms
    /// (window 0x...)`), so that a test can send input then.
    Open {
        /// How long to keep the editor open after its first frame, seconds (negative counts as 0).
        seconds: f64,
    },
    /// `--gui-cycles N`: open and close N times, each opening until the
    /// editor's first frame.
    Cycles {
        /// How many times to open and close the editor.
        count: u32,
    },
}

/// This process's descriptors, threads and resident memory at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// Open file descriptors (`/proc/self/fd`).
    pub fds: usize,
    /// Threads (`/proc/self/task`).
    pub threads: usize,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// What the process's code holds allocated through malloc (glibc's
    /// `mallinfo2`: in use in every arena, plus mmapped chunks), KiB: a leak
    /// of allocations shows here, free memory an arena keeps does not.
    pub heap_kib: u64,
}

impl ProcessSnapshot {
    /// The counts now; the resident memory after the allocator has given
    /// back what it holds free (glibc's `malloc_trim`), so that what freed
    /// memory an allocator keeps, fragmented over per-thread arenas, is not
    /// mistaken for a leak.
    pub fn now() -> ProcessSnapshot {
        // SAFETY: glibc's malloc_trim (give free memory back) and mallinfo2
        // (statistics, every arena) only read or reorganise the allocator's
        // own state, under its own locks; any thread may call them.
        let info = unsafe {
            libc::malloc_trim(0);
            libc::mallinfo2()
        };
        ProcessSnapshot {
            heap_kib: ((info.uordblks + info.hblkhd) / 1024) as u64,
            fds: crate::procfs::fd_count(),
            threads: std::fs::read_dir("/proc/self/task").map_or(0, |dir| dir.count()),
            rss_kib: crate::procfs::rss_kib(crate::procfs::own_pid()),
        }
    }

    /// The snapshot as a JSON object (`fds`, `threads`, `rss_kib`, `heap_kib`).
    pub fn to_json(&self) -> Value {
        json!({ "fds": self.fds, "threads": self.threads, "rss_kib": self.rss_kib, "heap_kib": self.heap_kib })
    }
}

/// What the editor session did (`gui` in the report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuiReport {
    /// The windowing API ("x11").
    pub api: String,
    /// Whether the editor floated (its own window, transient for the host's) rather than embedded.
    pub floating: bool,
    /// The size the plugin gave (`get_size`, after `adjust_size`/`set_size`),
    /// the parent window's at opening.
    pub size: (u32, u32),
    /// Whether the editor opened (create, set_parent or set_transient, show
    /// all succeeded) every time it was asked to.
    pub opened: bool,
    /// Openings (1 for `--gui`), and those in which a frame was seen.
    pub cycles: u32,
    /// Openings in which a frame was seen.
    pub cycles_drawn: u32,
    /// Milliseconds from `show` to the first frame seen: the first opening's,
    /// and the longest of any opening.
    pub first_frame_ms: Option<f64>,
    /// The longest time from `show` to the first frame over all openings, ms.
    pub first_frame_ms_max: Option<f64>,
    /// Seconds the editor was open in all.
    pub open_seconds: f64,
    /// The screenshot written (`--screenshot`), and the last screenshot's
    /// distinct colours and whether it is blank.
    pub screenshot: Option<PathBuf>,
    /// The last screenshot's size in pixels (width, height); (0, 0) when none was taken.
    pub screenshot_size: (u32, u32),
    /// Distinct colours in the last screenshot (0 when none was taken).
    pub distinct_colors: usize,
    /// Whether the last screenshot had fewer than [`BLANK_BELOW`] distinct colours (also true when none was taken).
    pub blank: bool,
    /// The parent window's area before `set_parent` (embedded) or the screen
    /// before `show` (floating): the control.
    pub control_distinct_colors: usize,
    /// Windows the plugin created inside the parent window (X11
    /// CreateNotify; 0 when floating).
    pub child_windows: u64,
    /// `request_resize` calls carried out on the parent window.
    pub resizes: u64,
    /// The plugin said `closed(was_destroyed = true)`: the session ended
    /// there.
    pub closed_by_plugin: bool,
    /// Timers and descriptors the plugin still had registered after the
    /// last `destroy`.
    pub timers_left: usize,
    /// File descriptors the plugin still had registered (CLAP posix-fd-support) after the last `destroy`.
    pub fds_left: usize,
    /// The process before the first opening, after the first closing and
    /// after the last (each after the settling, see [`SETTLE_LIMIT`]).
    pub before: ProcessSnapshot,
    /// The process after the first closing.
    pub after_first: ProcessSnapshot,
    /// The process after the last closing.
    pub after: ProcessSnapshot,
}

impl GuiReport {
    /// The report as the JSON object written under `gui` in the run's report.
    pub fn to_json(&self) -> Value {
        json!({
            "api": self.api,
            "floating": self.floating,
            "size": [self.size.0, self.size.1],
            "opened": self.opened,
            "cycles": self.cycles,
            "cycles_drawn": self.cycles_drawn,
            "first_frame_ms": self.first_frame_ms,
            "first_frame_ms_max": self.first_frame_ms_max,
            "open_seconds": self.open_seconds,
            "screenshot": self.screenshot.as_ref().map(|p| p.display().to_string()),
            "screenshot_size": [self.screenshot_size.0, self.screenshot_size.1],
            "distinct_colors": self.distinct_colors,
            "blank": self.blank,
            "blank_below": BLANK_BELOW,
            "control_distinct_colors": self.control_distinct_colors,
            "child_windows": self.child_windows,
            "resizes": self.resizes,
            "closed_by_plugin": self.closed_by_plugin,
            "timers_left": self.timers_left,
            "fds_left": self.fds_left,
            "process": {
                "before": self.before.to_json(),
                "after_first": self.after_first.to_json(),
                "after": self.after.to_json(),
            },
        })
    }
}

/// An RGB screenshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Rows top to bottom, 3 bytes a pixel.
    pub rgb: Vec<u8>,
}

impl Image {
    /// How many different RGB colours the image holds.
    pub fn distinct_colors(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in self.rgb.chunks_exact(3) {
            seen.insert(u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]));
        }
        seen.len()
    }

    /// Fewer than [`BLANK_BELOW`] distinct colours (stops counting there:
    /// cheap on a drawn frame).
    pub fn is_blank(&self) -> bool {
        let mut seen: Vec<[u8; 3]> = Vec::with_capacity(BLANK_BELOW);
        for p in self.rgb.chunks_exact(3) {
            let colour = [p[0], p[1], p[2]];
            if !seen.contains(&colour) {
                seen.push(colour);
                if seen.len() >= BLANK_BELOW {
                    return false;
                }
            }
        }
        true
    }

    /// Writes the image to `path` as an 8-bit RGB PNG; the error names the path (`--screenshot`).
    pub fn write_png(&self, path: &Path) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("--screenshot {}: {e}", path.display());
        let file = std::fs::File::create(path).map_err(|e| err(&e))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| err(&e))?;
        writer.write_image_data(&self.rgb).map_err(|e| err(&e))?;
        writer.finish().map_err(|e| err(&e))
    }
}

fn x11_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("X11: {what}: {e}")
}

/// The host's side of the X server: a connection, and the top-level
/// windows it makes to hold editors.
pub struct X11Host {
    conn: RustConnection,
    screen: usize,
    display: String,
    /// CreateNotify events seen under the current parent window.
    child_windows: u64,
}

impl X11Host {
    /// Connects to `$DISPLAY`; a clear error where there is none.
    pub fn connect() -> Result<X11Host, String> {
        let display = std::env::var("DISPLAY").unwrap_or_default();
        if display.is_empty() {
            return Err("--gui and --gui-cycles open the plugin's editor on an X11 display, and $DISPLAY is not \
                        set: start one (e.g. `Xvfb :99 -screen 0 1280x800x24 -nolisten tcp &` then `export \
                        DISPLAY=:99`, or run under xvfb-run)"
                .into());
        }
        X11Host::connect_to(&display)
    }

    /// Connects to this display (`:N`).
    pub fn connect_to(display: &str) -> Result<X11Host, String> {
        let (conn, screen) = x11rb::connect(Some(display))
            .map_err(|e| format!("--gui: cannot connect to the X11 display {display:?} ($DISPLAY): {e}"))?;
        Ok(X11Host { conn, screen, display: display.to_string(), child_windows: 0 })
    }

    /// The display connected to (`:N`, as in `$DISPLAY`).
    pub fn display(&self) -> &str {
        &self.display
    }

    fn root(&self) -> &x11rb::protocol::xproto::Screen {
        &self.conn.setup().roots[self.screen]
    }

    /// A mapped top-level window of this size, background
    /// [`PARENT_BACKGROUND`]; waits (up to 2 s) until the server says it is
    /// mapped.
    pub fn create_parent(&mut self, width: u32, height: u32) -> Result<u32, String> {
        let (root, depth) = (self.root().root, self.root().root_depth);
        let id = self.conn.generate_id().map_err(|e| x11_err("generate_id")(&e))?;
        let aux = CreateWindowAux::new()
            .background_pixel(PARENT_BACKGROUND)
            .event_mask(EventMask::STRUCTURE_NOTIFY | EventMask::SUBSTRUCTURE_NOTIFY);
        let (w, h) = (clamp16(width), clamp16(height));
        self.conn
            .create_window(depth, id, root, 0, 0, w, h, 0, WindowClass::INPUT_OUTPUT, 0, &aux)
            .map_err(|e| x11_err("CreateWindow")(&e))?
            .check()
            .map_err(|e| x11_err("CreateWindow")(&e))?;
        let title = b"outboard-host";
        let _ = self.conn.change_property8(PropMode::REPLACE, id, AtomEnum::WM_NAME, AtomEnum::STRING, title);
        self.conn.map_window(id).map_err(|e| x11_err("MapWindow")(&e))?;
        self.conn.flush().map_err(|e| x11_err("flush")(&e))?;
        self.child_windows = 0;
        let give_up = Instant::now() + Duration::from_secs(2);
        loop {
            match self.conn.poll_for_event().map_err(|e| x11_err("events")(&e))? {
                Some(Event::MapNotify(e)) if e.window == id => return Ok(id),
                Some(event) => self.note(event),
                None if Instant::now() > give_up => return Err("X11: the host window was not mapped within 2 s".into()),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Resizes a window of the host's (a parent window, on the plugin's `request_resize`); sizes are clamped to
    /// 1..=65535, what X11 takes.
    pub fn resize(&mut self, window: u32, width: u32, height: u32) -> Result<(), String> {
        let aux = ConfigureWindowAux::new().width(u32::from(clamp16(width))).height(u32::from(clamp16(height)));
        self.conn.configure_window(window, &aux).map_err(|e| x11_err("ConfigureWindow")(&e))?;
        self.conn.flush().map_err(|e| x11_err("flush")(&e))
    }

    /// Destroys a window of the host's, then reads the events that queued for this connection; errors are ignored.
    pub fn destroy(&mut self, window: u32) {
        let _ = self.conn.destroy_window(window);
        let _ = self.conn.flush();
        self.pump();
    }

    fn note(&mut self, event: Event) {
        if let Event::CreateNotify(_) = event {
            self.child_windows += 1;
        }
    }

    /// Reads (and drops, after noting what matters) the events queued for
    /// this connection.
    pub fn pump(&mut self) {
        while let Ok(Some(event)) = self.conn.poll_for_event() {
            self.note(event);
        }
    }

    /// The area of the screen that `window` covers (clipped to the screen),
    /// or the whole screen for `None`.
    pub fn capture(&mut self, window: Option<u32>) -> Result<Image, String> {
        let (reply, w, h) = self.grab(window)?;
        self.to_rgb(&reply.data, reply.depth, reply.visual, w, h)
    }

    /// Whether that area is not blank (see [`Image::is_blank`]): what
    /// [`Self::capture`] tells, read from the server's pixels as they are
    /// (no copy), stopping at the [`BLANK_BELOW`]th colour.
    pub fn shows_a_frame(&mut self, window: Option<u32>) -> Result<bool, String> {
        let (reply, w, h) = self.grab(window)?;
        let four_bytes =
            self.conn.setup().pixmap_formats.iter().any(|f| f.depth == reply.depth && f.bits_per_pixel == 32);
        let visual =
            self.root().allowed_depths.iter().flat_map(|d| d.visuals.iter()).find(|v| v.visual_id == reply.visual);
        let (Some(visual), true) = (visual, four_bytes) else {
            return Ok(!self.to_rgb(&reply.data, reply.depth, reply.visual, w, h)?.is_blank());
        };
        // 32 bits a pixel: rows need no padding; the colour bits, in either
        // byte order, compared as they are.
        let mask = visual.red_mask | visual.green_mask | visual.blue_mask;
        let mask = if self.conn.setup().image_byte_order == ImageOrder::LSB_FIRST { mask } else { mask.swap_bytes() };
        let mut seen: Vec<u32> = Vec::with_capacity(BLANK_BELOW);
        for px in reply.data.chunks_exact(4).take((w * h) as usize) {
            let colour = u32::from_le_bytes([px[0], px[1], px[2], px[3]]) & mask;
            if !seen.contains(&colour) {
                seen.push(colour);
                if seen.len() >= BLANK_BELOW {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn grab(&mut self, window: Option<u32>) -> Result<(x11rb::protocol::xproto::GetImageReply, u32, u32), String> {
        let root = self.root().root;
        let (sw, sh) = (self.root().width_in_pixels, self.root().height_in_pixels);
        let (x, y, w, h) = match window {
            None => (0i16, 0i16, sw, sh),
            Some(window) => {
                let geometry = self
                    .conn
                    .get_geometry(window)
                    .map_err(|e| x11_err("GetGeometry")(&e))?
                    .reply()
                    .map_err(|e| x11_err("GetGeometry")(&e))?;
                let at = self
                    .conn
                    .translate_coordinates(window, root, 0, 0)
                    .map_err(|e| x11_err("TranslateCoordinates")(&e))?
                    .reply()
                    .map_err(|e| x11_err("TranslateCoordinates")(&e))?;
                let (x0, y0) = (at.dst_x.max(0), at.dst_y.max(0));
                let w = (i32::from(at.dst_x) + i32::from(geometry.width)).min(i32::from(sw)) - i32::from(x0);
                let h = (i32::from(at.dst_y) + i32::from(geometry.height)).min(i32::from(sh)) - i32::from(y0);
                if w <= 0 || h <= 0 {
                    return Err("X11: the window is off the screen".into());
                }
                (x0, y0, w as u16, h as u16)
            }
        };
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, root, x, y, w, h, !0)
            .map_err(|e| x11_err("GetImage")(&e))?
            .reply()
            .map_err(|e| x11_err("GetImage")(&e))?;
        Ok((reply, u32::from(w), u32::from(h)))
    }

    /// ZPixmap data to RGB, through the visual's colour masks.
    fn to_rgb(&self, data: &[u8], depth: u8, visual: u32, width: u32, height: u32) -> Result<Image, String> {
        let setup = self.conn.setup();
        let format = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .ok_or_else(|| format!("X11: no pixmap format for depth {depth}"))?;
        let bpp = u32::from(format.bits_per_pixel);
        if bpp != 32 && bpp != 24 {
            return Err(format!("X11: {bpp} bits per pixel: only 24 and 32 are read"));
        }
        let visual = self
            .root()
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter())
            .find(|v| v.visual_id == visual)
            .ok_or_else(|| format!("X11: visual {visual:#x} not found"))?;
        let pad = u32::from(format.scanline_pad).max(8);
        let stride = ((width * bpp).div_ceil(pad) * pad / 8) as usize;
        let bytes = (bpp / 8) as usize;
        if data.len() < stride * height as usize {
            return Err(format!("X11: GetImage gave {} bytes for {width}x{height}", data.len()));
        }
        let lsb = setup.image_byte_order == ImageOrder::LSB_FIRST;
        let masks = [visual.red_mask, visual.green_mask, visual.blue_mask];
        let mut rgb = vec![0u8; (width * height * 3) as usize];
        let rows = data.chunks(stride).take(height as usize).zip(rgb.chunks_exact_mut(width as usize * 3));
        // The common case (Xvfb, every 24-bit TrueColor screen): 32 bits a
        // pixel, least significant byte first, each channel one whole byte.
        if bytes == 4 && lsb && masks.iter().all(|m| m.count_ones() == 8 && m.trailing_zeros() % 8 == 0) {
            let at = masks.map(|m| (m.trailing_zeros() / 8) as usize);
            for (line, out) in rows {
                for (px, o) in line.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
                    o.copy_from_slice(&[px[at[0]], px[at[1]], px[at[2]]]);
                }
            }
            return Ok(Image { width, height, rgb });
        }
        let channel = |pixel: u32, mask: u32| -> u8 {
            if mask == 0 {
                return 0;
            }
            let value = (pixel & mask) >> mask.trailing_zeros();
            let bits = mask.count_ones();
            if bits >= 8 { (value >> (bits - 8)) as u8 } else { (value * 255 / ((1 << bits) - 1)) as u8 }
        };
        for (line, out) in rows {
            for (b, o) in line.chunks_exact(bytes).zip(out.chunks_exact_mut(3)) {
                let pixel = match (bytes, lsb) {
                    (4, true) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    (4, false) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    (_, true) => u32::from_le_bytes([b[0], b[1], b[2], 0]),
                    (_, false) => u32::from_be_bytes([0, b[0], b[1], b[2]]),
                };
                o.copy_from_slice(&masks.map(|m| channel(pixel, m)));
            }
        }
        Ok(Image { width, height, rgb })
    }
}

fn clamp16(v: u32) -> u16 {
    v.clamp(1, u32::from(u16::MAX)) as u16
}

/// One open editor.
struct OpenEditor {
    gui: PluginGui,
    floating: bool,
    parent: u32,
    size: (u32, u32),
    /// The control screenshot (when asked for).
    control: Option<Image>,
    shown: Instant,
    /// The plugin said it destroyed its editor (and `destroy` was called).
    destroyed: bool,
    resizes: u64,
}

impl OpenEditor {
    /// Opens instance 0's editor (see the module docs for the order).
    fn open(
        instance: &mut Instance,
        x11: &mut X11Host,
        prefer_floating: bool,
        with_control: bool,
    ) -> Result<OpenEditor, String> {
        let gui = instance.extensions().gui.ok_or_else(|| {
            format!("--gui: plugin {:?} has no editor (it does not offer the CLAP gui extension)", instance.plugin_id())
        })?;
        let config = |is_floating| GuiConfiguration { api_type: GuiApiType::X11, is_floating };
        instance.instance.access_shared_handler(|s| s.gui.clear());
        let embeds = gui.is_api_supported(&instance.instance.plugin_handle(), config(false));
        let floats = gui.is_api_supported(&instance.instance.plugin_handle(), config(true));
        let floating = match (embeds && !prefer_floating, floats) {
            (true, _) => false,
            (false, true) => true,
            (false, false) if embeds => false,
            (false, false) => {
                return Err(format!(
                    "--gui: plugin {:?} offers no X11 editor, embedded or floating",
                    instance.plugin_id()
                ));
            }
        };
        gui.create(&instance.instance.plugin_handle(), config(floating))
            .map_err(|e| format!("--gui: the plugin's gui.create(\"x11\", floating = {floating}) failed: {e}"))?;
        // From here on, a failure destroys what was made.
        let fail = |instance: &mut Instance, x11: &mut X11Host, parent: Option<u32>, message: String| {
            gui.destroy(&instance.instance.plugin_handle());
            if let Some(parent) = parent {
                x11.destroy(parent);
            }
            Err(message)
        };
        let mut size =
            gui.get_size(&instance.instance.plugin_handle()).map(|s| (s.width, s.height)).unwrap_or(DEFAULT_SIZE);
        if !floating && gui.can_resize(&instance.instance.plugin_handle()) {
            let wanted = GuiSize { width: size.0, height: size.1 };
            let adjusted = gui.adjust_size(&instance.instance.plugin_handle(), wanted).unwrap_or(wanted);
            if gui.set_size(&instance.instance.plugin_handle(), adjusted).is_ok() {
                size = (adjusted.width, adjusted.height);
            }
        }
        let parent = match x11.create_parent(size.0, size.1) {
            Ok(parent) => parent,
            Err(e) => return fail(instance, x11, None, e),
        };
        let control = match with_control.then(|| x11.capture(if floating { None } else { Some(parent) })) {
            None => None,
            Some(Ok(image)) => Some(image),
            Some(Err(e)) => return fail(instance, x11, Some(parent), e),
        };
        let window = Window::from_x11_handle(std::ffi::c_ulong::from(parent));
        if floating {
            // SAFETY: the parent window lives until after `destroy`
            // (OpenEditor::close destroys the editor first).
            let _ = unsafe { gui.set_transient(&instance.instance.plugin_handle(), window) };
            gui.suggest_title(&instance.instance.plugin_handle(), c"outboard-host");
        } else {
            // SAFETY: as above.
            if let Err(e) = unsafe { gui.set_parent(&instance.instance.plugin_handle(), window) } {
                return fail(instance, x11, Some(parent), format!("--gui: the plugin's gui.set_parent failed: {e}"));
            }
        }
        if let Err(e) = gui.show(&instance.instance.plugin_handle()) {
            return fail(instance, x11, Some(parent), format!("--gui: the plugin's gui.show failed: {e}"));
        }
        Ok(OpenEditor { gui, floating, parent, size, control, shown: Instant::now(), destroyed: false, resizes: 0 })
    }

    /// One turn of the main loop: the instances' main-thread work, the gui
    /// requests of instance 0, this host's X11 events.
    fn serve(&mut self, instances: &mut [Instance], x11: &mut X11Host) {
        crate::run::service_all(instances);
        let instance = &mut instances[0];
        let (resize, show, hide, closed) = instance.instance.access_shared_handler(|s| {
            (s.gui.take_resize(), s.gui.take_show(), s.gui.take_hide(), s.gui.take_closed())
        });
        if !self.destroyed {
            let handle = instance.instance.plugin_handle();
            if let Some(size) = resize
                && !self.floating
                && x11.resize(self.parent, size.width, size.height).is_ok()
            {
                self.resizes += 1;
            }
            if show {
                let _ = self.gui.show(&handle);
            }
            if hide {
                let _ = self.gui.hide(&handle);
            }
            if closed == Some(GuiClosed::Destroyed) {
                self.gui.destroy(&handle);
                self.destroyed = true;
            }
        }
        x11.pump();
    }

    /// The editor's area of the screen now.
    fn capture(&self, x11: &mut X11Host) -> Result<Image, String> {
        x11.capture(self.area())
    }

    /// Whether the editor's area shows a frame (is not blank).
    fn shows_a_frame(&self, x11: &mut X11Host) -> bool {
        x11.shows_a_frame(self.area()).unwrap_or(false)
    }

    fn area(&self) -> Option<u32> {
        (!self.floating).then_some(self.parent)
    }

    /// hide, destroy, and the parent window destroyed.
    fn close(self, instance: &mut Instance, x11: &mut X11Host) {
        if !self.destroyed {
            let handle = instance.instance.plugin_handle();
            let _ = self.gui.hide(&handle);
            self.gui.destroy(&handle);
        }
        x11.destroy(self.parent);
    }
}

/// Serves the main loop until `done` says so (called every turn with the
/// time since the start).
fn serve_until(
    editor: &mut OpenEditor,
    instances: &mut [Instance],
    x11: &mut X11Host,
    mut done: impl FnMut(&mut OpenEditor, &mut X11Host, Duration) -> bool,
) {
    let began = Instant::now();
    loop {
        editor.serve(instances, x11);
        if editor.destroyed || done(editor, x11, began.elapsed()) {
            return;
        }
        std::thread::sleep(LOOP_PERIOD);
    }
}

/// Serves the instances (no editor open) until the process's descriptors
/// and threads are back to `target`'s, or [`SETTLE_LIMIT`] has passed.
fn settle(instances: &mut [Instance], x11: &mut X11Host, target: &ProcessSnapshot) -> ProcessSnapshot {
    let give_up = Instant::now() + SETTLE_LIMIT;
    loop {
        crate::run::service_all(instances);
        x11.pump();
        let now = ProcessSnapshot::now();
        if (now.fds == target.fds && now.threads == target.threads) || Instant::now() > give_up {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the editor session `config` asks for on instance 0, serving every
/// instance's main thread meanwhile.
pub fn run_session(config: &GuiConfig, instances: &mut [Instance], x11: &mut X11Host) -> Result<GuiReport, String> {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    let nice = getpriority_process(tid).unwrap_or(0);
    let _ = setpriority_process(tid, nice.max(GUI_NICE));
    // Below that: SCHED_IDLE, where permitted. This host's own GUI work (its
    // main loop every 2 ms, its screenshots) is the harness, not what is
    // measured: at idle priority it takes only what the audio threads and
    // the workers leave, even when a busy machine gets the workers demoted.
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (0) reads `idle`.
    let lowered = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } == 0;
    let outcome = session(config, instances, x11);
    if lowered {
        let other = libc::sched_param { sched_priority: 0 };
        // SAFETY: as above. (Back to SCHED_OTHER needs a nice value the
        // thread may have; where not, it stays idle for the rest of the run.)
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &other) };
    }
    // (Raising it back needs CAP_SYS_NICE or RLIMIT_NICE: where neither,
    // the main thread stays lowered for the rest of the run.)
    let _ = setpriority_process(tid, nice);
    outcome
}

fn session(config: &GuiConfig, instances: &mut [Instance], x11: &mut X11Host) -> Result<GuiReport, String> {
    let mut report = GuiReport { api: "x11".into(), opened: true, ..GuiReport::default() };
    report.before = ProcessSnapshot::now();
    let mut last: Option<Image> = None;
    let mut open_time = Duration::ZERO;
    match config.mode {
        GuiMode::Open { seconds } => {
            let mut editor = OpenEditor::open(&mut instances[0], x11, config.floating, true)?;
            eprintln!(
                "outboard-host: editor: open ({}, window {:#x}, {}x{})",
                if editor.floating { "floating" } else { "embedded" },
                editor.parent,
                editor.size.0,
                editor.size.1
            );
            // SECONDS count from the first frame (or from when it was given
            // up for, after CYCLE_FRAME_LIMIT).
            let hold = Duration::from_secs_f64(seconds.max(0.0));
            let mut next_look = Instant::now();
            let mut first_frame = None;
            let mut hold_from = None;
            serve_until(&mut editor, instances, x11, |editor, x11, elapsed| {
                if hold_from.is_none() && Instant::now() >= next_look {
                    next_look = Instant::now() + FRAME_POLL;
                    if editor.shows_a_frame(x11) {
                        let at = editor.shown.elapsed();
                        first_frame = Some(at);
                        hold_from = Some(elapsed);
                        eprintln!(
                            "outboard-host: editor: first frame after {:.0} ms (window {:#x})",
                            at.as_secs_f64() * 1e3,
                            editor.parent
                        );
                    } else if elapsed >= CYCLE_FRAME_LIMIT {
                        eprintln!("outboard-host: editor: no frame within {} s", CYCLE_FRAME_LIMIT.as_secs());
                        hold_from = Some(elapsed);
                    }
                }
                hold_from.is_some_and(|from| elapsed >= from + hold)
            });
            // (A failed screenshot is reported once the editor is closed.)
            let shot = (!editor.destroyed).then(|| editor.capture(x11)).transpose();
            report.first_frame_ms = first_frame.map(|d| d.as_secs_f64() * 1e3);
            report.first_frame_ms_max = report.first_frame_ms;
            report.cycles = 1;
            report.cycles_drawn = u32::from(first_frame.is_some());
            record_editor(&mut report, &editor, x11);
            report.resizes = editor.resizes;
            report.closed_by_plugin = editor.destroyed;
            open_time += editor.shown.elapsed();
            editor.close(&mut instances[0], x11);
            last = shot?;
            report.after = settle(instances, x11, &report.before);
            report.after_first = report.after;
        }
        GuiMode::Cycles { count } => {
            let mut wait_for_frames = true;
            for cycle in 0..count {
                let mut editor = OpenEditor::open(&mut instances[0], x11, config.floating, cycle == 0)?;
                let mut seen: Option<(Duration, Option<Image>)> = None;
                let mut next_look = Instant::now();
                serve_until(&mut editor, instances, x11, |editor, x11, elapsed| {
                    if Instant::now() >= next_look {
                        next_look = Instant::now() + FRAME_POLL;
                        if editor.shows_a_frame(x11) {
                            let at = editor.shown.elapsed();
                            // The picture of the last opening's frame.
                            seen = Some((at, (cycle + 1 == count).then(|| editor.capture(x11).ok()).flatten()));
                            return true;
                        }
                    }
                    elapsed >= if wait_for_frames { CYCLE_FRAME_LIMIT } else { CYCLE_NO_FRAME_HOLD }
                });
                report.cycles += 1;
                match seen {
                    Some((at, image)) => {
                        let ms = at.as_secs_f64() * 1e3;
                        report.cycles_drawn += 1;
                        report.first_frame_ms.get_or_insert(ms);
                        report.first_frame_ms_max = Some(report.first_frame_ms_max.unwrap_or(0.0).max(ms));
                        last = image.or(last);
                    }
                    None => wait_for_frames = false,
                }
                if cycle == 0 {
                    record_editor(&mut report, &editor, x11);
                }
                report.resizes += editor.resizes;
                report.closed_by_plugin |= editor.destroyed;
                open_time += editor.shown.elapsed();
                editor.close(&mut instances[0], x11);
                if cycle == 0 {
                    report.after_first = settle(instances, x11, &report.before);
                }
            }
            report.after = settle(instances, x11, &report.before);
        }
    }
    report.open_seconds = open_time.as_secs_f64();
    report.timers_left = instances[0].timer_count();
    report.fds_left = instances[0].fd_count();
    if let Some(image) = &last {
        report.distinct_colors = image.distinct_colors();
        report.screenshot_size = (image.width, image.height);
        if let Some(path) = &config.screenshot {
            image.write_png(path)?;
            report.screenshot = Some(path.clone());
        }
    }
    report.blank = report.distinct_colors < BLANK_BELOW;
    Ok(report)
}

/// What the first opening tells (its mode, size, control and children).
fn record_editor(report: &mut GuiReport, editor: &OpenEditor, x11: &X11Host) {
    report.floating = editor.floating;
    report.size = editor.size;
    report.control_distinct_colors = editor.control.as_ref().map_or(0, Image::distinct_colors);
    report.child_windows = x11.child_windows;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_colours_and_blankness() {
        let flat = Image { width: 4, height: 4, rgb: vec![7; 48] };
        assert_eq!(flat.distinct_colors(), 1);
        assert!(flat.is_blank());
        let rgb: Vec<u8> = (0..64u8).flat_map(|i| [i, i / 2, 255 - i]).collect();
        let ramp = Image { width: 8, height: 8, rgb };
        assert_eq!(ramp.distinct_colors(), 64);
        assert!(!ramp.is_blank());
    }

    #[test]
    fn screenshots_are_written_as_png() {
        let path = std::env::temp_dir().join(format!("outboard-host-editor-{}.png", std::process::id()));
        let rgb: Vec<u8> = (0..6u8).flat_map(|i| [i * 40, 0, 255]).collect();
        Image { width: 3, height: 2, rgb }.write_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width 3, height 2, 8 bits, colour type 2 (RGB).
        assert_eq!(&bytes[16..26], &[0, 0, 0, 3, 0, 0, 0, 2, 8, 2]);
    }

    #[test]
    fn without_a_display_the_error_says_what_to_do() {
        // Only where no display is set (the test must not change the
        // process's environment: other tests run beside it).
        if std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty()) {
            return;
        }
        let err = X11Host::connect().err().expect("no display");
        assert!(err.contains("$DISPLAY is not set") && err.contains("Xvfb"), "{err}");
    }
}
