// The user page: my applications, starting and stopping them, and the running one in a frame.
//
// Every value that comes from the API (image labels, user names, error messages) reaches the
// page through textContent or setAttribute on elements built here, never as markup.

import {
  apiClient,
  h,
  iconSource as iconOrFallback,
  metaContent,
  openDialog,
  showError,
  text,
  wireUserMenu as wireMenu,
} from "./common.js";

const api = apiClient(metaContent("remoteapp-api"));
const DEFAULT_ICON = document.body.dataset.defaultIcon || "";
// Desktops are shown by the service's own noVNC viewer, which the gate serves under their path.
const DESKTOP_VIEWER = document.body.dataset.desktopViewer === "true";
const VIEWER_DIR = ".remoteapp-desktop/";

const POLL_INTERVAL_MS = 1500;
// While a start of this page is under way, its step is asked for this often.
const PROGRESS_INTERVAL_MS = 250;
// The steps of a start, as the API names them (a starting container's "step").
const PULLING_STEP = "pulling the image";
const START_STEPS = [
  ["creating", "Creating the container"],
  ["starting", "Starting it"],
  ["pulling the image", "Pulling the image onto the node"],
  ["waiting for the app", "Waiting for the application to answer"],
  ["routing", "Routing to it"],
];
// From this many seconds before a session is stopped, its time left shows.
const CULL_WARNING_S = Number(document.body.dataset.cullWarning) || 300;
const FIT_WINDOW = "fit";
const COMMON_RESOLUTIONS = [
  "1024x768",
  "1280x720",
  "1280x800",
  "1280x1024",
  "1440x900",
  "1600x900",
  "1680x1050",
  "1920x1080",
  "2560x1440",
];
// The service refuses sizes outside these bounds; "Fit window" is clamped to them.
const MIN_SIZE = { width: 320, height: 200 };
const MAX_SIZE = { width: 7680, height: 4320 };

const STATUS_TEXT = {
  stopped: "Stopped",
  starting: "Starting",
  running: "Running",
  stopping: "Stopping",
};
const TYPE_TEXT = { vncapp: "Desktop", webapp: "Web application" };
// After a desktop's connection drops, the frame is reloaded after these delays in turn (the
// last one repeats) until noVNC is connected again, by itself or by a reload.
const RECONNECT_DELAYS_MS = [2000, 4000, 8000, 15000, 30000];
const WATCH_INTERVAL_MS = 500;
// "Reconnecting…" stays at least this long, so that a quick reconnection is still seen.
const RECONNECTING_SHOWN_MS = 1500;
const NOVNC_STATES = ["connected", "reconnecting", "connecting", "disconnecting", "disconnected"];

const state = {
  apps: [], // sorted by name
  loaded: false,
  selected: null, // mapping id
  filter: "",
  pending: new Map(), // mapping id -> "starting" | "stopping", for requests of this page
  steps: new Map(), // mapping id -> the step a start of this page is at
  resolution: new Map(), // mapping id -> the chosen resolution, kept across re-renders
  pollTimer: null,
  shownKey: null, // what the main panel shows, so polling does not reload the frame
};

const elements = {
  list: document.getElementById("applistentries"),
  listMessage: document.getElementById("applist-message"),
  search: document.getElementById("search-input"),
  spinner: document.getElementById("loading-spinner"),
  spinnerText: document.querySelector("#loading-spinner .loading-text"),
  steps: document.getElementById("start-steps"),
  panel: document.getElementById("app-panel"),
  view: document.getElementById("app-view"),
  menuButton: document.getElementById("user-menu"),
  menu: document.getElementById("user-menu-items"),
};

// ------------------------------------------------------------------------------- helpers
function iconSource(value) {
  return iconOrFallback(value, DEFAULT_ICON);
}

// A container's URL path becomes a frame's source: only a path on this site will do.
function safePath(value) {
  if (typeof value !== "string" || !value.startsWith("/") || value.startsWith("//")) return null;
  if (/[\\\s]/.test(value)) return null;
  return value.replace(/\/+$/, "");
}

// ------------------------------------------------------------------------------- the API
function toApplication(id, raw) {
  const item = raw && typeof raw === "object" ? raw : {};
  const image = item.image && typeof item.image === "object" ? item.image : null;
  const policy = item.policy && typeof item.policy === "object" ? item.policy : {};
  const container = item.container && typeof item.container === "object" ? item.container : null;
  const limits = item.limits && typeof item.limits === "object" ? item.limits : {};
  const lastStop = item.last_stop && typeof item.last_stop === "object" ? item.last_stop : null;
  const type = image && text(image.type) in TYPE_TEXT ? image.type : "vncapp";
  const available = image !== null && item.available !== false;
  return {
    id: text(item.mapping_id) || String(id),
    available,
    name: (image && (text(image.ui_name) || text(image.name))) || "Unavailable application",
    imageName: image ? text(image.name) : "",
    description: available
      ? text(image.description)
      : "This application cannot be started: its image is not available" +
        (text(item.unavailable_reason) ? ` (${text(item.unavailable_reason)}).` : "."),
    type,
    icon: iconSource(image && image.icon_128),
    configurables: Array.isArray(image && image.configurables)
      ? image.configurables.filter((name) => typeof name === "string")
      : [],
    allowHome: policy.allow_home === true,
    allowView: policy.allow_view === true,
    volumeSource: text(policy.volume_source),
    volumeTarget: text(policy.volume_target),
    volumeMode: text(policy.volume_mode),
    allowStartupData: policy.allow_startup_data === true,
    memoryMb: positive(limits.memory_limit_mb),
    cpus: positive(limits.cpu_limit),
    pids: positive(limits.pids_limit),
    idleTimeout: positive(policy.idle_timeout_s),
    maxLifetime: positive(policy.max_lifetime_s),
    lastStop: lastStop ? text(lastStop.message) : "",
    sourceGroup: text(item.source_group),
    container: container
      ? {
          urlId: text(container.url_id),
          urlpath: safePath(container.urlpath),
          state: text(container.state),
          step: text(container.step),
          expiresAt: timeOf(container.expires_at),
        }
      : null,
  };
}

function positive(value) {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : null;
}

function timeOf(value) {
  const when = typeof value === "string" ? Date.parse(value) : NaN;
  return Number.isNaN(when) ? null : when;
}

function duration(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

function resources(app) {
  return [
    app.memoryMb ? `${app.memoryMb} MiB memory` : "no memory limit",
    app.cpus ? `${app.cpus} CPU${app.cpus === 1 ? "" : "s"}` : "no CPU limit",
    app.pids ? `${app.pids} processes` : "no process limit",
  ].join(", ");
}

function timeLimits(app) {
  const found = [];
  if (app.idleTimeout) found.push(`stops after ${duration(app.idleTimeout)} without input`);
  if (app.maxLifetime) found.push(`stops ${duration(app.maxLifetime)} after its start`);
  return found.join("; ");
}

function byName(a, b) {
  return a.name.localeCompare(b.name, undefined, { sensitivity: "base" }) || a.id.localeCompare(b.id);
}

async function loadApplications() {
  const answer = await api("GET", "applications/");
  const items = answer && typeof answer.items === "object" && answer.items ? answer.items : {};
  const ids = Array.isArray(answer && answer.identifiers) ? answer.identifiers : Object.keys(items);
  state.apps = ids.filter((id) => id in items).map((id) => toApplication(id, items[id])).sort(byName);
  state.loaded = true;
}

async function reloadApplication(id) {
  const fresh = toApplication(id, await api("GET", `applications/${encodeURIComponent(id)}/`));
  state.apps = state.apps.map((app) => (app.id === id ? fresh : app));
}

// ------------------------------------------------------------------------------- state
function statusOf(app) {
  const pending = state.pending.get(app.id);
  if (pending) return pending;
  const container = app.container;
  if (!container) return "stopped";
  if (container.state === "running") return container.urlpath ? "running" : "stopped";
  if (container.state === "starting" || container.state === "stopping") return container.state;
  return "stopped"; // exited: the next start replaces it
}

function selectedApp() {
  return state.apps.find((app) => app.id === state.selected) || null;
}

function visibleApps() {
  const needle = state.filter.trim().toLocaleLowerCase();
  if (!needle) return state.apps;
  return state.apps.filter((app) =>
    [app.name, app.description, app.imageName, TYPE_TEXT[app.type]].some((value) =>
      value.toLocaleLowerCase().includes(needle),
    ),
  );
}

function mounts(app) {
  const found = [];
  if (app.allowHome) found.push("Workspace → /workspace");
  if (app.volumeSource && app.volumeTarget) {
    const mode = app.volumeMode === "rw" ? "read-write" : "read-only";
    found.push(`${app.volumeSource} → ${app.volumeTarget} (${mode})`);
  }
  return found;
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  const settling = state.apps.some(
    (app) => !state.pending.has(app.id) && ["starting", "stopping"].includes(statusOf(app)),
  );
  if (settling) state.pollTimer = setTimeout(poll, POLL_INTERVAL_MS);
}

async function poll() {
  try {
    await loadApplications();
  } catch {
    // A hiccup while waiting: try again at the next tick.
  }
  render();
  schedulePoll();
}

// ------------------------------------------------------------------------------- dialogs
function confirmQuit(app) {
  return openDialog({
    title: `Stop ${app.name}?`,
    body: [
      h("p", {
        text: "The application will be closed. Anything not saved to the workspace is lost.",
      }),
    ],
    buttons: [
      { label: "Cancel", value: "cancel" },
      { label: "Ok", value: "ok", primary: true },
    ],
  });
}

// Where a running application is shown: a desktop in the service's viewer, else its own page.
function framePath(app) {
  return `${app.container.urlpath}/${DESKTOP_VIEWER && app.type === "vncapp" ? VIEWER_DIR : ""}`;
}

// ------------------------------------------------------------------------------- sharing
// What the site allows ("sharing", "links", "control", "clipboard-to-app",
// "clipboard-from-app"), as the page's meta tag says.
const SWITCHES = new Set((metaContent("remoteapp-sharing") || "").split(/\s+/).filter(Boolean));
const CONTROL_POLL_MS = 3000;
const MODE_TEXT = { view: "can view", control: "can control" };

function sharesPath(app) {
  return `containers/${encodeURIComponent(app.container.urlId)}/shares/`;
}

function controlPath(urlId) {
  return `containers/${encodeURIComponent(urlId)}/control`;
}

async function listShares(app) {
  const listing = await api("GET", sharesPath(app));
  const ids = Array.isArray(listing && listing.identifiers) ? listing.identifiers : [];
  const items = listing && listing.items && typeof listing.items === "object" ? listing.items : {};
  return {
    shares: ids.map((id) => items[id]).filter((item) => item && typeof item === "object"),
    connected: Array.isArray(listing && listing.connected) ? listing.connected : [],
  };
}

function describeShare(share) {
  if (share.link === true) return "Anyone signed in with the link";
  if (typeof share.group === "string") return `Group ${share.group}`;
  return text(share.user);
}

// The share dialog: the link (shared to view as soon as the dialog opens, where the site and
// the policy allow links), sharing with a user or a group, and who may see the session now.
async function showShare(app) {
  let listing = await listShares(app);
  if (SWITCHES.has("links") && !listing.shares.some((share) => share.link === true)) {
    await api("POST", sharesPath(app), { link: true, mode: "view" });
    listing = await listShares(app);
  }
  // The viewer's page: the session under a banner that says whether their input counts.
  const link = `${window.location.origin}${window.location.pathname}?view=${app.container.urlId}`;
  const body = [];
  const feedback = h("span", { class: "copy-feedback", role: "status" });
  if (SWITCHES.has("links")) {
    const field = h("input", {
      id: "shared-url",
      class: "share-field",
      type: "text",
      value: link,
      spellcheck: "false",
      "aria-label": "Link to this application",
    });
    const copy = h("button", {
      id: "cp-clipboard-button",
      type: "button",
      class: "button",
      text: "Copy",
      onclick: async () => {
        const value = field.value;
        feedback.textContent = (await copyText(value, field))
          ? "Copied"
          : "Select the link and copy it";
      },
    });
    field.addEventListener("focus", () => field.select());
    body.push(
      h("p", { text: "People signed in to this site can view the application with this link." }),
      h("div", { class: "share-row" }, field, copy),
      feedback,
    );
  }
  const list = h("ul", { id: "share-list", class: "share-list" });
  const viewers = h("ul", { id: "share-viewers", class: "share-list" });
  const refresh = async () => {
    listing = await listShares(app);
    list.replaceChildren(
      ...listing.shares.map((share) =>
        h(
          "li",
          { class: "share-entry" },
          h("span", { class: "share-subject", text: describeShare(share) }),
          h("span", { class: "share-mode", text: MODE_TEXT[share.mode] || "" }),
          h("button", {
            type: "button",
            class: "button button-danger share-revoke",
            text: "Revoke",
            "aria-label": `Stop sharing with ${describeShare(share)}`,
            onclick: async () => {
              try {
                await api("DELETE", `${sharesPath(app)}${encodeURIComponent(share.id)}/`);
              } catch (error) {
                feedback.textContent = error.message;
              }
              await refresh();
            },
          }),
        ),
      ),
    );
    if (!listing.shares.length) list.append(h("li", { text: "Not shared with anyone." }));
    viewers.replaceChildren(
      ...listing.connected.map((viewer) =>
        h("li", {
          class: "share-viewer",
          text: `${text(viewer.user)} — ${viewer.input ? "in control" : "viewing"}`,
        }),
      ),
    );
    if (!listing.connected.length) viewers.append(h("li", { text: "Nobody else is watching." }));
    updateBadge(listing.shares.length);
  };
  const suggestions = h("datalist", { id: "share-suggestions" });
  const who = h("input", {
    id: "share-who",
    type: "text",
    placeholder: "Hub user or group name",
    autocomplete: "off",
    spellcheck: "false",
    list: "share-suggestions",
    "aria-label": "Whom to share with",
  });
  // The hub's users and groups whose names start with what was typed, asked of the service
  // (which asks the hub); names reach the page as option values, never as markup.
  let searchTimer = null;
  who.addEventListener("input", () => {
    clearTimeout(searchTimer);
    const prefix = who.value.trim();
    if (!prefix) return;
    searchTimer = setTimeout(async () => {
      let found;
      try {
        found = await api("GET", `directory?query=${encodeURIComponent(JSON.stringify({ prefix }))}`);
      } catch {
        return; // no suggestions: a name typed in full still works
      }
      const users = Array.isArray(found.users) ? found.users.map(text) : [];
      const groups = Array.isArray(found.groups) ? found.groups.map(text) : [];
      suggestions.replaceChildren(
        ...users.map((name) => h("option", { value: name, label: "user", "data-kind": "user" })),
        ...groups.map((name) => h("option", { value: name, label: "group", "data-kind": "group" })),
      );
    }, 250);
  });
  who.addEventListener("change", () => {
    const picked = [...suggestions.children].find((option) => option.value === who.value);
    if (picked) kind.value = picked.dataset.kind;
  });
  const kind = h(
    "select",
    { id: "share-kind", "aria-label": "User or group" },
    h("option", { value: "user", text: "User" }),
    h("option", { value: "group", text: "Group" }),
  );
  const mode = h(
    "select",
    { id: "share-mode", "aria-label": "What they may do" },
    h("option", { value: "view", text: "View" }),
    ...(SWITCHES.has("control") ? [h("option", { value: "control", text: "Control" })] : []),
  );
  const add = h("button", {
    id: "share-add",
    type: "button",
    class: "button",
    text: "Share",
    onclick: async () => {
      const name = who.value.trim();
      if (!name) return;
      try {
        await api("POST", sharesPath(app), { [kind.value]: name, mode: mode.value });
        who.value = "";
        feedback.textContent = "";
      } catch (error) {
        feedback.textContent = error.message;
      }
      await refresh();
    },
  });
  body.push(
    h("div", { class: "share-row" }, kind, who, suggestions, mode, add),
    h("h3", { text: "Shared with" }),
    list,
    h("h3", { text: "Connected now" }),
    viewers,
  );
  await refresh();
  return openDialog({
    title: `Share ${app.name}`,
    className: "share-dialog",
    body,
    buttons: [{ label: "Close", value: "close", primary: true }],
  });
}

function updateBadge(count) {
  const badge = document.getElementById("shared-badge");
  if (!badge) return;
  badge.hidden = !count;
  badge.textContent = count ? "Shared" : "";
}

// While a shared session of the owner is shown: its shares (the badge) and requests for
// control (a notice with Give and Refuse), asked for every few seconds.
let controlTimer = null;

function watchControl(app) {
  clearTimeout(controlTimer);
  const tick = async () => {
    const notices = document.getElementById("control-requests");
    if (!notices || !notices.isConnected) return;
    try {
      const [control, listing] = await Promise.all([
        api("GET", controlPath(app.container.urlId)),
        listShares(app),
      ]);
      updateBadge(listing.shares.length);
      showRequests(app, notices, control);
    } catch {
      // The session stopped or the service is away: the next render decides.
    }
    controlTimer = setTimeout(tick, CONTROL_POLL_MS);
  };
  tick();
}

async function control(urlId, action, user) {
  return api("POST", controlPath(urlId), user ? { action, user } : { action });
}

function showRequests(app, notices, state) {
  const urlId = app.container.urlId;
  const requests = Array.isArray(state.requests) ? state.requests.map(text) : [];
  const items = requests.map((name) =>
    h(
      "div",
      { class: "control-request" },
      h("span", { text: `${name} asks for control` }),
      h("button", {
        type: "button",
        class: "button control-give",
        text: "Give",
        onclick: async () => showRequests(app, notices, await control(urlId, "give", name)),
      }),
      h("button", {
        type: "button",
        class: "button control-refuse",
        text: "Refuse",
        onclick: async () => showRequests(app, notices, await control(urlId, "refuse", name)),
      }),
    ),
  );
  if (state.controller || state.everyone) {
    const who = state.everyone ? "Every viewer" : text(state.controller);
    items.push(
      h(
        "div",
        { class: "control-request" },
        h("span", { id: "control-holder", text: `${who} has control` }),
        h("button", {
          type: "button",
          id: "control-take",
          class: "button",
          text: "Take control back",
          onclick: async () => showRequests(app, notices, await control(urlId, "take")),
        }),
      ),
    );
  }
  notices.replaceChildren(...items);
}

// A session someone shared with me, opened as {svc}?view=<url_id>: the application in a
// frame, under a banner saying whether my input reaches it, with a button to ask for control.
async function showViewer(urlId) {
  let state;
  try {
    state = await api("GET", controlPath(urlId));
  } catch (error) {
    elements.spinner.hidden = true;
    await showError("This session cannot be opened", error.message);
    return;
  }
  const urlpath = safePath(state.urlpath);
  if (!urlpath) return;
  const banner = h("span", { id: "view-only-banner", class: "status", role: "status" });
  const ask = h("button", {
    type: "button",
    id: "request-control",
    class: "button",
    text: "Request control",
    onclick: async () => {
      try {
        update(await control(urlId, "request"));
        banner.textContent = `Asked ${text(state.owner)} for control…`;
      } catch (error) {
        banner.textContent = error.message;
      }
    },
  });
  const give = h("button", {
    type: "button",
    id: "release-control",
    class: "button",
    text: "Give control back",
    hidden: true,
    onclick: async () => update(await control(urlId, "release")),
  });
  let input = null;
  const iframe = h("iframe", {
    id: "application",
    class: "application-frame",
    title: `${text(state.owner)}'s session`,
    allow: "fullscreen",
  });
  const update = (fresh) => {
    state = fresh;
    banner.textContent = state.input
      ? `You control ${text(state.owner)}'s session`
      : `View only — ${text(state.owner)}'s session`;
    banner.classList.toggle("status-view-only", !state.input);
    ask.hidden = state.input || !SWITCHES.has("control");
    give.hidden = !state.input || state.everyone;
    if (input === null) {
      input = state.input;
      iframe.src = `${urlpath}/`;
    }
  };
  update(state);
  iframe.addEventListener("load", () => {
    elements.spinner.hidden = true;
  });
  elements.panel.replaceChildren(
    h(
      "div",
      { class: "app-toolbar" },
      h("h1", { class: "toolbar-title", text: `${text(state.owner)}'s session` }),
      banner,
      h("div", { class: "toolbar-actions" }, ask, give),
    ),
    iframe,
  );
  const poll = async () => {
    try {
      update(await api("GET", controlPath(urlId)));
    } catch {
      banner.textContent = "This session is no longer shared with you.";
      iframe.remove();
      return;
    }
    setTimeout(poll, CONTROL_POLL_MS);
  };
  setTimeout(poll, CONTROL_POLL_MS);
}

async function copyText(value, field) {
  try {
    await navigator.clipboard.writeText(value);
    return true;
  } catch {
    field.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

// ------------------------------------------------------------------------------- actions
function fitWindow() {
  const width = Math.round(elements.view.clientWidth);
  const height = Math.round(elements.view.clientHeight - toolbarHeight());
  const clamp = (value, low, high) => Math.min(high, Math.max(low, value));
  return `${clamp(width, MIN_SIZE.width, MAX_SIZE.width)}x${clamp(height, MIN_SIZE.height, MAX_SIZE.height)}`;
}

function toolbarHeight() {
  const toolbar = elements.panel.querySelector(".app-toolbar");
  return toolbar ? toolbar.offsetHeight : 0;
}

function chosenConfigurables(app, form) {
  const configurables = {};
  if (app.configurables.includes("resolution")) {
    const choice = form.elements.namedItem("resolution").value;
    const resolution = choice === FIT_WINDOW ? fitWindow() : choice;
    configurables.resolution = { resolution };
  }
  if (app.configurables.includes("startupdata")) {
    const path = form.elements.namedItem("startupdata").value.trim();
    if (path) configurables.startupdata = { startupdata: path };
  }
  return configurables;
}

// Follow the steps of a start under way (the POST answers only when it is over).
function followStart(id) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      const raw = await api("GET", `applications/${encodeURIComponent(id)}/`);
      const container = raw && typeof raw.container === "object" ? raw.container : null;
      const step = container && container.state === "starting" ? text(container.step) : "";
      if (!stopped && step) {
        state.steps.set(id, step);
        const app = selectedApp();
        if (app) updateSpinner(app, statusOf(app));
      }
    } catch {
      // The start's own answer says what went wrong.
    }
    if (!stopped) timer = setTimeout(tick, PROGRESS_INTERVAL_MS);
  };
  timer = setTimeout(tick, PROGRESS_INTERVAL_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
    state.steps.delete(id);
  };
}

async function start(app, form) {
  const configurables = chosenConfigurables(app, form);
  state.pending.set(app.id, "starting");
  state.steps.set(app.id, START_STEPS[0][0]);
  render();
  const stopFollowing = followStart(app.id);
  try {
    await api("POST", "containers/", { mapping_id: app.id, configurables });
    stopFollowing();
    await reloadApplication(app.id);
  } catch (error) {
    stopFollowing();
    state.pending.delete(app.id);
    render();
    await showError(`${app.name} did not start`, error.message);
    return;
  } finally {
    stopFollowing();
    state.pending.delete(app.id);
  }
  render();
  schedulePoll();
}

async function quit(app) {
  if ((await confirmQuit(app)) !== "ok") return;
  const urlId = app.container && app.container.urlId;
  state.pending.set(app.id, "stopping");
  render();
  try {
    if (urlId) await api("DELETE", `containers/${encodeURIComponent(urlId)}/`);
    await reloadApplication(app.id);
  } catch (error) {
    state.pending.delete(app.id);
    render();
    await showError(`${app.name} did not stop`, error.message);
    return;
  } finally {
    state.pending.delete(app.id);
  }
  render();
  schedulePoll();
}

async function keepWorking(app) {
  const urlId = app.container && app.container.urlId;
  if (!urlId) return;
  try {
    await api("POST", `containers/${encodeURIComponent(urlId)}/activity`);
    await reloadApplication(app.id);
  } catch (error) {
    await showError(`${app.name} could not be kept running`, error.message);
  }
  render();
  updateTimeLeft();
}

// The time left before the selected session is stopped, once under CULL_WARNING_S.
function updateTimeLeft() {
  const shown = document.getElementById("time-left");
  const button = document.getElementById("keep-working");
  const app = selectedApp();
  if (!shown || !button || !app || !app.container || app.container.expiresAt === null) return;
  const left = Math.max(0, Math.round((app.container.expiresAt - Date.now()) / 1000));
  const warn = left <= CULL_WARNING_S;
  shown.hidden = !warn;
  button.hidden = !warn;
  if (!warn) return;
  const minutes = Math.floor(left / 60);
  const seconds = String(left % 60).padStart(2, "0");
  shown.textContent = `Stops in ${minutes}:${seconds}`;
  if (left === 0 && !state.pollTimer) state.pollTimer = setTimeout(poll, POLL_INTERVAL_MS);
}

function select(id, { focusPanel = false } = {}) {
  state.selected = id;
  // The selection survives a reload through the fragment (never sent to the server).
  window.history.replaceState(null, "", `${window.location.pathname}#${encodeURIComponent(id)}`);
  render();
  if (focusPanel) {
    const target = elements.panel.querySelector("#start-button, #application");
    if (target) target.focus();
  }
}

// ------------------------------------------------------------------------------- rendering
function render() {
  renderList();
  renderPanel();
}

function renderList() {
  const apps = visibleApps();
  const focusedId = document.activeElement && document.activeElement.dataset.mappingId;
  const entries = apps.map((app, index) => {
    const status = statusOf(app);
    const meta = h(
      "span",
      { class: "app-meta" },
      h("span", { class: "chip chip-type", text: TYPE_TEXT[app.type] }),
      ...mounts(app).map((mount) => h("span", { class: "chip chip-mount", text: mount })),
    );
    const button = h(
      "button",
      {
        type: "button",
        id: `application-entry-${index}`,
        class: "app-entry",
        "data-mapping-id": app.id,
        "aria-current": app.id === state.selected ? "true" : null,
        onclick: () => select(app.id, { focusPanel: true }),
      },
      h("img", { class: "app-icon", src: app.icon, alt: "", width: 40, height: 40 }),
      h(
        "span",
        { class: "app-text" },
        h(
          "span",
          { class: "app-heading" },
          h("span", { class: "app-name", text: app.name }),
          h("span", { class: `status status-${status}`, text: STATUS_TEXT[status] }),
        ),
        app.description ? h("span", { class: "app-description", text: app.description }) : null,
        app.sourceGroup
          ? h("span", { class: "app-group", text: `Through group ${app.sourceGroup}` })
          : null,
        meta,
      ),
    );
    return h("li", { class: "app-item" }, button);
  });
  elements.list.replaceChildren(...entries);
  if (focusedId) {
    const again = elements.list.querySelector(`[data-mapping-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }

  let message = "";
  if (state.loaded && state.apps.length === 0) {
    message = "You have no applications yet. Your administrator can give you some.";
  } else if (state.loaded && apps.length === 0) {
    message = `No application matches “${state.filter.trim()}”.`;
  }
  elements.listMessage.textContent = message;
  elements.listMessage.hidden = !message;
}

function renderPanel() {
  const app = selectedApp();
  const status = app ? statusOf(app) : null;
  const key = app
    ? `${app.id}|${status}|${app.container ? app.container.urlpath : ""}`
    : `none|${state.loaded}|${state.apps.length > 0}`;
  if (key === state.shownKey) {
    updateSpinner(app, status);
    return;
  }
  state.shownKey = key;
  if (!app) {
    elements.panel.replaceChildren(
      state.loaded && state.apps.length
        ? h(
            "div",
            { class: "placeholder" },
            h("h1", { text: "Choose an application" }),
            h("p", { text: "Pick one from the list to start it or to go back to it." }),
          )
        : "",
    );
  } else if (status === "running") {
    elements.panel.replaceChildren(toolbar(app, status), frame(app));
    updateTimeLeft();
    if (app.allowView && SWITCHES.has("sharing")) watchControl(app);
  } else {
    elements.panel.replaceChildren(toolbar(app, status), settings(app, status));
  }
  updateSpinner(app, status);
}

function updateSpinner(app, status) {
  let message = "";
  if (!state.loaded) message = "Loading your applications…";
  else if (app && status === "starting") message = `Starting ${app.name}…`;
  else if (app && status === "stopping") message = `Stopping ${app.name}…`;
  else if (app && status === "running" && !elements.panel.querySelector("#application.loaded")) {
    message = `Opening ${app.name}…`;
  }
  elements.spinnerText.textContent = message;
  elements.spinner.hidden = !message;
  renderSteps(app && status === "starting" ? currentStep(app) : "");
}

// The step a start is at: this page's own start, or one seen in the listing.
function currentStep(app) {
  const known = state.steps.get(app.id) || (app.container && app.container.step) || "";
  return START_STEPS.some(([step]) => step === known) ? known : "";
}

function renderSteps(current) {
  elements.steps.hidden = !current;
  if (!current) {
    elements.steps.replaceChildren();
    return;
  }
  // Only a swarm node pulls while it starts: that step shows while it lasts.
  const steps = START_STEPS.filter(([step]) => step !== PULLING_STEP || current === PULLING_STEP);
  const reached = steps.findIndex(([step]) => step === current);
  elements.steps.replaceChildren(
    ...steps.map(([step, label], index) =>
      h("li", {
        class: index < reached ? "step-done" : index === reached ? "step-current" : "step-next",
        "data-step": step,
        "aria-current": index === reached ? "step" : null,
        text: label,
      }),
    ),
  );
}

function toolbar(app, status) {
  const actions = h("div", { class: "toolbar-actions" });
  if (status === "running" && app.allowView && SWITCHES.has("sharing")) {
    actions.append(
      h("div", { id: "control-requests", class: "control-requests", "aria-live": "polite" }),
      h("button", {
        type: "button",
        id: "share-button",
        class: "button",
        text: "Share",
        onclick: async () => {
          try {
            await showShare(app);
          } catch (error) {
            await showError(`${app.name} could not be shared`, error.message);
          }
        },
      }),
    );
  }
  if (status === "running" && app.container && app.container.expiresAt !== null) {
    actions.append(
      h("span", { id: "time-left", class: "time-left", role: "status", hidden: true }),
      h("button", {
        type: "button",
        id: "keep-working",
        class: "button",
        text: "Keep working",
        hidden: true,
        onclick: () => keepWorking(app),
      }),
    );
  }
  if (status === "running") {
    actions.append(
      h("button", {
        type: "button",
        id: "quit-button",
        class: "button button-danger",
        text: "Quit",
        onclick: () => quit(app),
      }),
    );
  }
  return h(
    "div",
    { class: "app-toolbar" },
    h("img", { class: "app-icon", src: app.icon, alt: "", width: 32, height: 32 }),
    h("h1", { class: "toolbar-title", text: app.name }),
    h("span", { class: `status status-${status}`, text: STATUS_TEXT[status] }),
    h("span", { id: "shared-badge", class: "status status-shared", hidden: true }),
    h("span", {
      id: "reconnecting",
      class: "status status-reconnecting",
      role: "status",
      text: "Reconnecting…",
      hidden: true,
    }),
    actions,
  );
}

// noVNC (served by the desktop's container, on this page's origin unless applications have
// hosts of their own) marks its connection's state as a class of its document element.
function desktopState(iframe) {
  try {
    const root = iframe.contentDocument && iframe.contentDocument.documentElement;
    if (!root) return null;
    return NOVNC_STATES.find((name) => root.classList.contains(`noVNC_${name}`)) || null;
  } catch {
    return null; // another origin: noVNC's own reconnection is all there is
  }
}

function showReconnecting(shown) {
  const badge = document.getElementById("reconnecting");
  if (badge) badge.hidden = !shown;
  const iframe = document.getElementById("application");
  if (iframe) iframe.classList.toggle("reconnecting", shown);
}

// Watches a desktop's connection while its frame is shown. Once it has been connected, a
// drop shows "Reconnecting…"; while noVNC has not got back by itself the frame is reloaded
// with growing delays, after checking that the session still runs (if it does not, the
// panel shows why instead). The session is untouched: only this viewer reconnects.
function watchDesktop(app, iframe) {
  let connected = false;
  let droppedAt = null;
  let attempt = 0;
  let reloading = false;
  let shownAt = null;
  const timer = setInterval(async () => {
    if (!iframe.isConnected) {
      clearInterval(timer);
      return;
    }
    const current = desktopState(iframe);
    // What this page last saw of the connection, for whoever looks at the page.
    iframe.dataset.desktop = current || "unknown";
    const now = Date.now();
    if (current === "connected") {
      connected = true;
      droppedAt = null;
      attempt = 0;
      if (shownAt !== null && now - shownAt >= RECONNECTING_SHOWN_MS) {
        shownAt = null;
        showReconnecting(false);
      }
      return;
    }
    if (!connected || reloading) return;
    if (droppedAt === null) {
      droppedAt = now;
      shownAt = now;
      // Counted on the frame: how many times this desktop's connection dropped.
      iframe.dataset.drops = String(Number(iframe.dataset.drops || 0) + 1);
      showReconnecting(true);
      return;
    }
    const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
    if (now - droppedAt < delay) return;
    reloading = true;
    try {
      await reloadApplication(app.id);
    } catch {
      // The service did not answer: try the desktop anyway, and ask again next time.
    }
    reloading = false;
    attempt += 1;
    droppedAt = Date.now();
    const fresh = selectedApp();
    if (!fresh || fresh.id !== app.id || statusOf(fresh) !== "running") {
      render();
      return;
    }
    if (iframe.isConnected) iframe.src = `${fresh.container.urlpath}/`;
  }, WATCH_INTERVAL_MS);
}

function clipboardAllowed() {
  return SWITCHES.has("clipboard-to-app") && SWITCHES.has("clipboard-from-app");
}

// Where the site turns the clipboard off, noVNC's clipboard panel goes too (a courtesy: the
// gate drops pasted text on its way to the desktop). Only a frame on this origin can be
// reached; noVNC may build its panel after the load, so this looks again for a while.
function hideClipboardPanel(iframe) {
  if (clipboardAllowed()) return;
  let tries = 0;
  const hide = () => {
    try {
      const doc = iframe.contentDocument;
      const button = doc && doc.getElementById("noVNC_clipboard_button");
      if (button) {
        button.hidden = true;
        button.style.display = "none";
        return;
      }
    } catch {
      return; // another origin
    }
    tries += 1;
    if (tries < 20) setTimeout(hide, 500);
  };
  hide();
}

function frame(app) {
  const iframe = h("iframe", {
    id: "application",
    class: "application-frame",
    title: app.name,
    src: framePath(app),
    allow: clipboardAllowed() ? "clipboard-read; clipboard-write; fullscreen" : "fullscreen",
  });
  iframe.addEventListener("load", () => {
    iframe.classList.add("loaded");
    hideClipboardPanel(iframe);
    updateSpinner(selectedApp(), "running");
    // The application should get the keyboard at once (a desktop needs every key).
    iframe.focus();
    try {
      iframe.contentWindow.focus();
    } catch {
      // Focus on the frame element is enough where the window refuses it.
    }
  });
  if (app.type === "vncapp") watchDesktop(app, iframe);
  return iframe;
}

function settings(app, status) {
  const busy = status === "starting" || status === "stopping";
  const form = h("form", {
    id: "application-settings",
    class: "settings",
    "aria-label": `Settings of ${app.name}`,
  });
  const fields = h("div", { class: "settings-fields" });

  if (app.configurables.includes("resolution")) {
    const chosen = state.resolution.get(app.id) || FIT_WINDOW;
    const select = h(
      "select",
      {
        id: "resolution-select",
        name: "resolution",
        disabled: busy,
        onchange: (event) => state.resolution.set(app.id, event.target.value),
      },
      h("option", { value: FIT_WINDOW, text: "Fit window" }),
      ...COMMON_RESOLUTIONS.map((size) => h("option", { value: size, text: size.replace("x", " × ") })),
    );
    select.value = chosen;
    fields.append(
      h(
        "div",
        { class: "field" },
        h("label", { for: "resolution-select", text: "Resolution" }),
        select,
      ),
    );
  }
  if (app.configurables.includes("startupdata")) {
    const roots = [app.allowHome ? "/workspace" : "", app.volumeTarget].filter(Boolean);
    fields.append(
      h(
        "div",
        { class: "field" },
        h("label", { for: "startupdata-input", text: "Startup file" }),
        h("input", {
          id: "startupdata-input",
          name: "startupdata",
          type: "text",
          disabled: busy,
          placeholder: roots.length ? `${roots[0]}/…` : "/path/to/file",
          autocomplete: "off",
          spellcheck: "false",
          "aria-describedby": "startupdata-help",
        }),
        h("p", {
          id: "startupdata-help",
          class: "field-help",
          text: roots.length
            ? `Optional: a file the application opens at start, inside ${roots.join(" or ")}.`
            : "Optional: a file the application opens at start.",
        }),
      ),
    );
  }

  const details = h("dl", { class: "details" });
  const addDetail = (term, value) => details.append(h("dt", { text: term }), h("dd", { text: value }));
  addDetail("Type", TYPE_TEXT[app.type]);
  addDetail("Resources", resources(app));
  const limited = timeLimits(app);
  if (limited) addDetail("Time limits", limited);
  const mounted = mounts(app);
  addDetail("Data", mounted.length ? mounted.join(", ") : "No folders are mounted");
  if (app.allowView) addDetail("Sharing", "Can be shared with other signed-in users");

  const startButton = h("button", {
    type: "submit",
    id: "start-button",
    class: "button button-primary button-large",
    disabled: busy || !app.available,
    text: status === "starting" ? "Starting…" : status === "stopping" ? "Stopping…" : "Start",
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!startButton.disabled) start(app, form);
  });
  form.append(
    app.lastStop && status === "stopped"
      ? h("p", { id: "last-stop", class: "notice", role: "status", text: `Your last session ended: ${app.lastStop}.` })
      : "",
    app.description ? h("p", { class: "settings-description", text: app.description }) : "",
    details,
    fields.childElementCount ? h("fieldset", { class: "settings-group" }, h("legend", { text: "Start with" }), fields) : "",
    h("div", { class: "settings-actions" }, startButton),
  );
  return form;
}

// ------------------------------------------------------------------------------- wiring
function wireUserMenu() {
  wireMenu(elements.menuButton, elements.menu);
  // The way to the admin page is offered to admins only.
  if (document.body.dataset.admin !== "true") {
    for (const link of document.querySelectorAll("[data-admin-only]")) link.remove();
  }
}

function wireSearch() {
  elements.search.addEventListener("input", () => {
    state.filter = elements.search.value;
    renderList();
  });
  elements.search.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      const first = elements.list.querySelector(".app-entry");
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });
}

function wireListKeys() {
  elements.list.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const entries = [...elements.list.querySelectorAll(".app-entry")];
    const index = entries.indexOf(document.activeElement);
    if (index < 0) return;
    event.preventDefault();
    const next = index + (event.key === "ArrowDown" ? 1 : -1);
    if (next < 0) elements.search.focus();
    else if (next < entries.length) entries[next].focus();
  });
}

async function main() {
  wireUserMenu();
  const viewing = new URLSearchParams(window.location.search).get("view");
  if (viewing && /^[a-z0-9]{1,64}$/.test(viewing)) {
    await showViewer(viewing);
    return;
  }
  wireSearch();
  wireListKeys();
  render();
  try {
    await loadApplications();
  } catch (error) {
    state.loaded = true;
    render();
    await showError("Your applications could not be loaded", error.message);
    return;
  }
  let wanted = "";
  try {
    wanted = decodeURIComponent(window.location.hash.slice(1));
  } catch {
    // A mangled fragment selects nothing.
  }
  if (wanted && state.apps.some((app) => app.id === wanted)) state.selected = wanted;
  render();
  schedulePoll();
  setInterval(updateTimeLeft, 1000);
}

main();
