// The admin page: statistics, users and their policies (grants), applications, containers.
//
// Views are chosen by the fragment (#/, #/containers, #/users, #/users/<id>/accounting,
// #/applications) and built from the admin API. Every value from the API reaches the page
// through textContent or setAttribute (see h), never as markup.

import {
  ApiError,
  apiClient,
  confirmDialog,
  h,
  iconSource,
  metaContent,
  openDialog,
  showError,
  text,
  wireUserMenu,
} from "./common.js";

const api = apiClient(metaContent("remoteapp-admin-api"));
const DEFAULT_ICON = document.body.dataset.defaultIcon || "";
const TYPE_TEXT = { vncapp: "Desktop", webapp: "Web application" };
const STATE_TEXT = {
  starting: "Starting",
  running: "Running",
  stopping: "Stopping",
  exited: "Exited",
  stopped: "Stopped",
};
const SHORT_ID = 12;

const elements = {
  main: document.getElementById("admin-view"),
  nav: document.getElementById("adminoptions"),
  menuButton: document.getElementById("user-menu"),
  menu: document.getElementById("user-menu-items"),
};

// Bumped at every navigation: answers for a view that is no longer shown are dropped.
let shown = 0;

// ------------------------------------------------------------------------------- helpers
function entries(answer) {
  const items = answer && typeof answer.items === "object" && answer.items ? answer.items : {};
  const ids = Array.isArray(answer && answer.identifiers) ? answer.identifiers : Object.keys(items);
  return ids
    .filter((id) => typeof id === "string" && items[id] && typeof items[id] === "object")
    .map((id) => [id, items[id]]);
}

function short(value) {
  const full = text(value);
  return full.length > SHORT_ID ? h("span", { title: full, text: `${full.slice(0, SHORT_ID)}…` }) : full;
}

// Image names and the like read best on one line (the table scrolls if need be).
function oneLine(value) {
  return { text: text(value), nowrap: true };
}

// A container's URL path, if it is one on this site (it becomes a link).
function sitePath(value) {
  if (typeof value !== "string" || !value.startsWith("/") || value.startsWith("//")) return null;
  if (/[\\\s]/.test(value)) return null;
  return `${value.replace(/\/+$/, "")}/`;
}

function yesNo(value) {
  return value === true ? "Yes" : "No";
}

function describe(error) {
  return error instanceof ApiError ? error.message : "Something went wrong on this page.";
}

// An absolute path without ".." segments, as the service accepts for volumes.
function isAbsolutePath(value) {
  return value.startsWith("/") && !value.split("/").includes("..") && !/[\0-\x1f]/.test(value);
}

function volumeText(item) {
  const source = text(item.volume_source);
  const target = text(item.volume_target);
  if (!source || !target) return "";
  return `${source} → ${target} (${item.volume_mode === "rw" ? "read-write" : "read-only"})`;
}

// ------------------------------------------------------------------------------- building blocks
function box(title, ...content) {
  return h(
    "section",
    { class: "box" },
    h("header", { class: "box-header" }, h("h1", { class: "box-title", text: title })),
    h("div", { class: "box-body" }, ...content),
  );
}

function errorAlert(message) {
  return h(
    "div",
    { class: "alert alert-danger", role: "alert" },
    h("strong", { text: "Error: " }),
    h("span", { class: "alert-message", text: message }),
  );
}

function toolbar(...buttons) {
  return h("div", { class: "box-actions" }, ...buttons);
}

function actionButton(label, onclick, { primary = false, danger = false } = {}) {
  const classes = ["button"];
  if (primary) classes.push("button-primary");
  if (danger) classes.push("button-danger");
  return h("button", { type: "button", class: classes.join(" "), text: label, onclick });
}

// rows: [{ id, cells: [text, node, or { text, nowrap }],
//          actions: [{ label, onclick, danger } or { label, href } for a link in a new tab] }]
function dataTable(headers, rows, emptyText) {
  const hasActions = rows.some((row) => row.actions && row.actions.length);
  const head = h(
    "tr",
    {},
    ...headers.map((header) => h("th", { scope: "col", text: header })),
    hasActions ? h("th", { scope: "col" }, h("span", { class: "visually-hidden", text: "Actions" })) : null,
  );
  const body = rows.map((row) =>
    h(
      "tr",
      { "data-id": row.id },
      ...row.cells.map((cell) => {
        if (cell instanceof Node) return h("td", {}, cell);
        if (cell && typeof cell === "object") {
          return h("td", { class: cell.nowrap ? "nowrap" : null, text: cell.text });
        }
        return h("td", { text: cell });
      }),
      hasActions
        ? h(
            "td",
            { class: "row-actions" },
            ...(row.actions || []).map((action) =>
              action.href
                ? h("a", {
                    class: "button",
                    href: action.href,
                    target: "_blank",
                    rel: "noopener noreferrer",
                    text: action.label,
                  })
                : actionButton(action.label, action.onclick, { danger: action.danger }),
            ),
          )
        : null,
    ),
  );
  if (!rows.length) {
    body.push(
      h("tr", { class: "empty-row" }, h("td", { colspan: headers.length + 1, text: emptyText })),
    );
  }
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { class: "datatable", id: "datatable" }, h("thead", {}, head), h("tbody", {}, ...body)),
  );
}

function show(...content) {
  elements.main.replaceChildren(...content);
}

// Shows `title` while `load` runs, then what `build` makes of its answer, or the error.
async function view(token, title, load, build) {
  show(box(title, h("p", { class: "loading-line", role: "status", text: "Loading…" })));
  let answer;
  try {
    answer = await load();
  } catch (error) {
    if (token === shown) show(box(title, errorAlert(describe(error))));
    return;
  }
  if (token === shown) show(build(answer));
}

// A dialog whose primary button sends a form; the service's refusal shows inside it.
function formDialog({ title, fields, submit }) {
  const alert = h("div", { class: "alert alert-danger", role: "alert", hidden: true });
  // A refusal is about what was sent: it goes as soon as the form changes.
  for (const element of fields) {
    element.addEventListener("input", () => (alert.hidden = true));
    element.addEventListener("change", () => (alert.hidden = true));
  }
  const fail = (message) => {
    alert.replaceChildren(h("strong", { text: "Error: " }), h("span", { class: "alert-message", text: message }));
    alert.hidden = false;
    return false;
  };
  return openDialog({
    title,
    form: true,
    className: "dialog-form",
    body: [...fields, alert],
    buttons: [
      { label: "Cancel", value: "cancel" },
      {
        label: "Submit",
        value: "submit",
        primary: true,
        action: async () => {
          alert.hidden = true;
          try {
            const problem = await submit();
            return problem ? fail(problem) : true;
          } catch (error) {
            return fail(describe(error));
          }
        },
      },
    ],
  });
}

function field(label, control, help) {
  const helpId = help ? `${control.id}-help` : null;
  if (helpId) control.setAttribute("aria-describedby", helpId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: control.id, text: label }),
    control,
    help ? h("p", { id: helpId, class: "field-help", text: help }) : null,
  );
}

function checkbox(id, label, checked = false) {
  const input = h("input", { type: "checkbox", id, name: id, checked });
  return { input, element: h("div", { class: "check" }, input, h("label", { for: id, text: label })) };
}

// Asks first; the button that asked shows `busyText` while the service works.
async function removeWith(title, message, path, button, busyText) {
  if ((await confirmDialog(title, message)) !== "ok") return false;
  const label = button.textContent;
  button.disabled = true;
  button.textContent = busyText;
  try {
    await api("DELETE", path);
  } catch (error) {
    button.disabled = false;
    button.textContent = label;
    await showError(`${title} failed`, describe(error));
  }
  return true;
}

// ------------------------------------------------------------------------------- statistics
function showStats(token) {
  return view(token, "Statistics", () => api("GET", "stats/"), (stats) => {
    const row = (label, value) =>
      h("tr", {}, h("th", { scope: "row", text: label }), h("td", { text: String(value ?? "") }));
    return box(
      "Statistics",
      toolbar(actionButton("Refresh", () => route())),
      h(
        "table",
        { class: "stats", id: "stats" },
        h(
          "tbody",
          {},
          row("Realm", text(stats.realm)),
          row("Total users", stats.num_total_users),
          row("Number of applications", stats.num_applications),
          row("Active users", stats.num_active_users),
          row("Running containers", stats.num_running_containers),
        ),
      ),
    );
  });
}

// ------------------------------------------------------------------------------- containers
function showContainers(token) {
  const query = pageQuery(CONTAINERS_PAGE, containerList.offset, { user: containerList.user });
  // Refreshed every few seconds while shown: a later navigation bumps `shown` and ends it.
  if (containersTimer === null) {
    containersTimer = window.setInterval(() => {
      const open = document.querySelector("dialog[open]");
      if (!document.hidden && !open && currentView === "containers") route();
    }, CONTAINERS_REFRESH_S * 1000);
  }
  return view(token, "Containers", () => api("GET", `containers/?${query}`), (answer) => {
    const rows = entries(answer).map(([id, item]) => {
      const link = item.state === "running" ? sitePath(item.urlpath) : null;
      const stop = {
        label: "Stop",
        danger: true,
        onclick: async (event) => {
          const what = `${text(item.image_name)} of ${text(item.user)}`;
          const stopped = await removeWith(
            "Stop container",
            `Do you want to stop container ${id} (${what})? Anything not saved is lost.`,
            `containers/${encodeURIComponent(id)}/`,
            event.currentTarget,
            "Stopping…",
          );
          if (stopped) route();
        },
      };
      return {
        id,
        cells: [
          short(id),
          text(item.user),
          oneLine(item.image_name),
          short(item.docker_id),
          short(item.mapping_id),
          STATE_TEXT[item.state] || text(item.state),
        ],
        actions: link ? [{ label: "Open", href: link }, stop] : [stop],
      };
    });
    return box(
      "Containers",
      toolbar(
        actionButton("Refresh", () => route()),
        h("span", { class: "refresh-note", text: `Refreshed every ${CONTAINERS_REFRESH_S} s` }),
      ),
      searchForm("containers-user", "User", containerList, "user"),
      dataTable(
        ["URL ID", "User", "Image", "Docker ID", "Mapping ID", "State"],
        rows,
        "No application is running.",
      ),
      pager(answer, CONTAINERS_PAGE, (offset) => {
        containerList.offset = offset;
        route();
      }),
    );
  });
}

// ------------------------------------------------------------------------------- users
const USERS_PAGE = 50;
const CONTAINERS_PAGE = 50;
// Seconds between two refreshes of the containers view while it is shown.
const CONTAINERS_REFRESH_S = 5;
const userList = { name: "", offset: 0 };
const containerList = { user: "", offset: 0 };
let containersTimer = null;

// A one-field filter form: `state[key]` is set from it, the page goes back to the first.
function searchForm(id, label, state, key) {
  const input = h("input", { id, type: "search", maxlength: "255", value: state[key] });
  return h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        state[key] = input.value.trim();
        state.offset = 0;
        route();
      },
    },
    field(label, input),
    h("button", { type: "submit", class: "button button-primary", text: "Filter" }),
  );
}

function pageQuery(limit, offset, filters) {
  const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
  for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
  return query.toString();
}

function showUsers(token) {
  const query = pageQuery(USERS_PAGE, userList.offset, { name: userList.name });
  return view(token, "Users", () => api("GET", `users/?${query}`), (answer) => {
    const rows = entries(answer).map(([id, item]) => ({
      id,
      cells: [id, text(item.name)],
      actions: [
        {
          label: "Policies",
          onclick: () => {
            window.location.hash = `#/users/${encodeURIComponent(id)}/accounting`;
          },
        },
        {
          label: "Remove",
          danger: true,
          onclick: async (event) => {
            const removed = await removeWith(
              "Remove User",
              `Do you want to remove user ${text(item.name)} (${id})? Their policies go with ` +
                "them and their running applications are stopped.",
              `users/${encodeURIComponent(id)}/`,
              event.currentTarget,
              "Removing…",
            );
            if (removed) route();
          },
        },
      ],
    }));
    return box(
      "Users",
      toolbar(
        actionButton("Create New Entry", createUser, { primary: true }),
        actionButton("Group Policies", openGroup),
      ),
      searchForm("users-name", "Name contains", userList, "name"),
      dataTable(["ID", "Username"], rows, userList.name ? "No user matches." : "There are no users yet."),
      pager(answer, USERS_PAGE, (offset) => {
        userList.offset = offset;
        route();
      }),
    );
  });
}

async function createUser() {
  const input = h("input", {
    id: "user-name",
    name: "name",
    type: "text",
    required: true,
    maxlength: 255,
    autocomplete: "off",
    spellcheck: "false",
    autofocus: true,
  });
  const result = await formDialog({
    title: "Create New User",
    fields: [field("Username", input, "The user's JupyterHub name.")],
    submit: async () => {
      const name = input.value.trim();
      if (!name) return "Enter the user's name.";
      await api("POST", "users/", { name });
      return null;
    },
  });
  if (result === "submit") route();
}

async function openGroup() {
  const input = h("input", { id: "group", name: "group", type: "text", required: true, autocomplete: "off" });
  let group = "";
  const result = await formDialog({
    title: "Policies of a Hub Group",
    fields: [field("Group", input, "The JupyterHub group: its members get its policies.")],
    submit: async () => {
      group = input.value.trim();
      if (!group || group.includes("/")) return "Enter the group's name (without '/').";
      return null;
    },
  });
  if (result === "submit") window.location.hash = `#/groups/${encodeURIComponent(group)}/accounting`;
}

// ------------------------------------------------------------------------------- a user's (or group's) policies
function showAccounting(token, userId, group = null) {
  const load = async () => {
    if (group !== null) {
      const filter = encodeURIComponent(JSON.stringify({ group }));
      return { user: { name: `group ${group}` }, grants: await api("GET", `accounting/?filter=${filter}`) };
    }
    const user = await api("GET", `users/${encodeURIComponent(userId)}/`);
    const filter = encodeURIComponent(JSON.stringify({ user_id: userId }));
    return { user, grants: await api("GET", `accounting/?filter=${filter}`) };
  };
  const owner = group !== null ? { group } : { user_id: userId };
  return view(token, "Policies", load, ({ user, grants }) => {
    const name = text(user.name);
    const rows = entries(grants).map(([id, item]) => ({
      id,
      cells: [
        short(id),
        oneLine(item.image_name),
        text(item.app_license),
        yesNo(item.allow_home),
        volumeText(item),
        yesNo(item.allow_view),
        yesNo(item.allow_startup_data),
        text(Array.isArray(item.placement) ? item.placement.join(", ") : ""),
        limitsText(item),
        timeoutsText(item),
      ],
      actions: [
        {
          label: "Remove",
          danger: true,
          onclick: async (event) => {
            const removed = await removeWith(
              "Remove Policy",
              `Do you want to remove the policy ${id} of ${name} for ${text(item.image_name)}? ` +
                "A running container under it is stopped.",
              `accounting/${encodeURIComponent(id)}/`,
              event.currentTarget,
              "Removing…",
            );
            if (removed) route();
          },
        },
      ],
    }));
    return box(
      `Policies of ${name}`,
      toolbar(
        actionButton("Create New Entry", () => createGrant(owner, name), { primary: true }),
        h("a", { class: "button", href: "#/users", text: "Back to users" }),
      ),
      dataTable(
        ["ID", "Image", "License", "Workspace", "Volume", "View", "Startup file", "Placement", "Limits", "Timeouts"],
        rows,
        `${name} has no policies yet: they see no applications.`,
      ),
    );
  });
}

async function createGrant(owner, userName) {
  let applications = [];
  try {
    applications = entries(await api("GET", "applications/"));
  } catch (error) {
    await showError("The applications could not be loaded", describe(error));
    return;
  }
  const image = h(
    "select",
    { id: "image_name", name: "image_name", required: true },
    ...applications.map(([, item]) => {
      const imageName = text(item.image_name);
      const uiName = item.image ? text(item.image.ui_name) : "";
      const label = uiName && uiName !== imageName ? `${imageName} (${uiName})` : imageName;
      return h("option", { value: imageName, text: item.available === false ? `${label} (not on the engine)` : label });
    }),
  );
  const license = h("textarea", {
    id: "app_license",
    name: "app_license",
    rows: 2,
    maxlength: 4096,
    placeholder: "Enter the license key here if the application needs one",
  });
  const source = h("input", { id: "volume_source", name: "volume_source", type: "text", placeholder: "/host/path", spellcheck: "false", autocomplete: "off" });
  const target = h("input", { id: "volume_target", name: "volume_target", type: "text", placeholder: "/container/path", spellcheck: "false", autocomplete: "off" });
  const home = checkbox("allow_home", "Mount the user's workspace at /workspace");
  const readonly = checkbox("volume_readonly", "Mount the volume read-only", true);
  const viewable = checkbox("allow_view", "Allow viewing: signed-in users with the link can see it");
  const startup = checkbox("allow_startup_data", "Allow providing a startup file");
  const placement = h("textarea", {
    id: "placement",
    name: "placement",
    rows: 2,
    spellcheck: "false",
    placeholder: "node.labels.gpu==true (one constraint a line; Docker Swarm only)",
  });
  const number = (id, min, max, step, placeholder) =>
    h("input", { id, name: id, type: "number", min, max, step, placeholder, inputmode: "decimal" });
  const memory = number("memory_limit_mb", 6, 16777216, 1, "default");
  const cpus = number("cpu_limit", 0.01, 1024, 0.01, "default");
  const pids = number("pids_limit", 1, 4194304, 1, "default");
  const idle = number("idle_timeout_s", 0, 31622400, 1, "never");
  const lifetime = number("max_lifetime_s", 0, 31622400, 1, "never");

  const fields = [
    applications.length
      ? field("Image Name", image)
      : errorAlert("No application is registered yet: register one under Applications first."),
    field("License", license),
    home.element,
    h(
      "fieldset",
      { class: "field-group" },
      h("legend", { text: "Volume (both paths, or neither)" }),
      h("div", { class: "field-pair" }, field("Volume source", source), field("Volume target", target)),
      readonly.element,
    ),
    viewable.element,
    startup.element,
    field("Placement", placement, "Swarm constraints, KEY==VALUE or KEY!=VALUE, one a line."),
    h(
      "fieldset",
      { class: "field-group" },
      h("legend", { text: "Resources (empty: the deployment's default)" }),
      h("div", { class: "field-pair" }, field("Memory (MiB)", memory), field("CPUs", cpus), field("Processes", pids)),
    ),
    h(
      "fieldset",
      { class: "field-group" },
      h("legend", { text: "Timeouts in seconds (empty or 0: never)" }),
      h("div", { class: "field-pair" }, field("Idle timeout", idle), field("Maximum lifetime", lifetime)),
    ),
  ];
  const result = await formDialog({
    title: `Create New Policy for ${userName}`,
    fields,
    submit: async () => {
      if (!applications.length) return "Register an application first.";
      const volumeSource = source.value.trim();
      const volumeTarget = target.value.trim();
      if (Boolean(volumeSource) !== Boolean(volumeTarget)) {
        return "Both Volume source and Volume target must be given, or neither.";
      }
      for (const [label, value] of [["Volume source", volumeSource], ["Volume target", volumeTarget]]) {
        if (value && !isAbsolutePath(value)) return `${label} must be an absolute path.`;
      }
      const constraints = placement.value
        .split("\n")
        .map((line) => line.trim())
        .filter(Boolean);
      const limits = {};
      for (const [key, input, whole] of [
        ["memory_limit_mb", memory, true],
        ["cpu_limit", cpus, false],
        ["pids_limit", pids, true],
        ["idle_timeout_s", idle, true],
        ["max_lifetime_s", lifetime, true],
      ]) {
        const raw = input.value.trim();
        if (!raw) continue;
        const value = Number(raw);
        if (!Number.isFinite(value) || (whole && !Number.isInteger(value))) {
          return `${key} must be ${whole ? "a whole number" : "a number"}.`;
        }
        limits[key] = value;
      }
      await api("POST", "accounting/", {
        ...limits,
        ...owner,
        image_name: image.value,
        app_license: license.value.trim() || null,
        allow_home: home.input.checked,
        allow_view: viewable.input.checked,
        volume_source: volumeSource || null,
        volume_target: volumeTarget || null,
        volume_mode: readonly.input.checked ? "ro" : "rw",
        allow_startup_data: startup.input.checked,
        placement: constraints,
      });
      return null;
    },
  });
  if (result === "submit") route();
}

function limitsText(item) {
  const parts = [];
  if (typeof item.memory_limit_mb === "number") parts.push(`${item.memory_limit_mb} MiB`);
  if (typeof item.cpu_limit === "number") parts.push(`${item.cpu_limit} CPU`);
  if (typeof item.pids_limit === "number") parts.push(`${item.pids_limit} pids`);
  return parts.join(", ") || "default";
}

function timeoutsText(item) {
  const parts = [];
  if (item.idle_timeout_s) parts.push(`idle ${item.idle_timeout_s} s`);
  if (item.max_lifetime_s) parts.push(`lifetime ${item.max_lifetime_s} s`);
  return parts.join(", ") || "none";
}

// ------------------------------------------------------------------------------- applications
function engineCell(item) {
  if (item.available === true) return h("span", { class: "badge badge-ok", text: "Available" });
  if (item.available === false) {
    const reason = typeof item.unavailable_reason === "string" ? item.unavailable_reason : "";
    return h("span", { class: "badge badge-missing", text: "Unavailable", title: reason || "Not on the engine" });
  }
  return h("span", { class: "badge", text: "Unknown" });
}

function nameCell(item) {
  const image = item.image && typeof item.image === "object" ? item.image : null;
  if (!image) return "";
  return h(
    "div",
    { class: "app-cell" },
    h("img", { class: "app-icon", src: iconSource(image.icon_128, DEFAULT_ICON), alt: "", width: 32, height: 32 }),
    h(
      "div",
      { class: "app-cell-text" },
      h("span", { class: "app-cell-name", text: text(image.ui_name) }),
      text(image.description) ? h("span", { class: "app-cell-description", text: image.description }) : null,
    ),
  );
}

function showApplications(token) {
  return view(token, "Applications", () => api("GET", "applications/"), (answer) => {
    const rows = entries(answer).map(([id, item]) => {
      const image = item.image && typeof item.image === "object" ? item.image : null;
      const env = image && Array.isArray(image.env) ? image.env.filter((name) => typeof name === "string") : [];
      return {
        id,
        cells: [
          id,
          oneLine(item.image_name),
          nameCell(item),
          image ? TYPE_TEXT[image.type] || text(image.type) : "",
          engineCell(item),
          env.join(", "),
        ],
        actions: [
          {
            label: "Remove",
            danger: true,
            onclick: async (event) => {
              const removed = await removeWith(
                "Remove Application",
                `Do you want to remove application ${text(item.image_name)} (${id})? Its ` +
                  "policies go with it and its running containers are stopped.",
                `applications/${encodeURIComponent(id)}/`,
                event.currentTarget,
                "Removing…",
              );
              if (removed) route();
            },
          },
        ],
      };
    });
    return box(
      "Applications",
      toolbar(actionButton("Create New Entry", createApplication, { primary: true })),
      dataTable(
        ["ID", "Image", "Name", "Type", "Engine", "Environment"],
        rows,
        "No application is registered yet.",
      ),
    );
  });
}

async function createApplication() {
  const input = h("input", {
    id: "image-name",
    name: "image_name",
    type: "text",
    required: true,
    maxlength: 255,
    placeholder: "repository/name:tag",
    autocomplete: "off",
    spellcheck: "false",
    autofocus: true,
  });
  const result = await formDialog({
    title: "Create New Application",
    fields: [
      field(
        "Image Name",
        input,
        "A Docker image on the engine. It is never pulled: build or pull it there.",
      ),
    ],
    submit: async () => {
      const imageName = input.value.trim();
      if (!imageName) return "Enter the image's name.";
      await api("POST", "applications/", { image_name: imageName });
      return null;
    },
  });
  if (result === "submit") route();
}

// ------------------------------------------------------------------------------- activity
const ACTIONS = [
  "login", "start", "stop", "cull", "grant", "revoke", "app_create", "app_delete",
  "user_create", "user_delete", "enter", "share", "unshare",
];
const ACTIVITY_PAGE = 50;
// The filters and page of the activity view, kept while the admin moves between views.
const activity = { actor: "", action: "", since: "", until: "", offset: 0 };

// A datetime-local value (the browser's local time) as an ISO 8601 instant, or "".
function isoInstant(local) {
  if (!local) return "";
  const moment = new Date(local);
  return Number.isNaN(moment.getTime()) ? "" : moment.toISOString();
}

function activityQuery(extra = {}) {
  const query = new URLSearchParams();
  if (activity.actor.trim()) query.set("actor", activity.actor.trim());
  if (activity.action) query.set("action", activity.action);
  const since = isoInstant(activity.since);
  const until = isoInstant(activity.until);
  if (since) query.set("since", since);
  if (until) query.set("until", until);
  for (const [key, value] of Object.entries(extra)) query.set(key, String(value));
  return query.toString();
}

function detailText(detail) {
  if (!detail || typeof detail !== "object") return "";
  return Object.entries(detail)
    .map(([key, value]) => `${key}=${value === null ? "" : String(value)}`)
    .join(", ");
}

function activityFilters() {
  const actor = h("input", { id: "activity-actor", type: "search", maxlength: "255", value: activity.actor });
  const action = h(
    "select",
    { id: "activity-action" },
    h("option", { value: "", text: "Any action" }),
    ...ACTIONS.map((name) => h("option", { value: name, text: name })),
  );
  action.value = activity.action;
  const since = h("input", { id: "activity-since", type: "datetime-local", value: activity.since });
  const until = h("input", { id: "activity-until", type: "datetime-local", value: activity.until });
  const apply = (event) => {
    event.preventDefault();
    activity.actor = actor.value;
    activity.action = action.value;
    activity.since = since.value;
    activity.until = until.value;
    activity.offset = 0;
    route();
  };
  return h(
    "form",
    { class: "filters", id: "activity-filters", onsubmit: apply },
    field("Actor", actor),
    field("Action", action),
    field("From", since),
    field("Before", until),
    h("button", { type: "submit", class: "button button-primary", text: "Filter" }),
  );
}

function pager(answer, pageSize, onMove) {
  const total = Number(answer.total) || 0;
  const offset = Number(answer.offset) || 0;
  const count = entries(answer).length;
  const first = count ? offset + 1 : 0;
  const previous = actionButton("Previous", () => onMove(Math.max(offset - pageSize, 0)));
  const next = actionButton("Next", () => onMove(offset + pageSize));
  previous.disabled = offset === 0;
  next.disabled = offset + count >= total;
  // The audit trail counts only so far past the page: then its total is a lower bound.
  const of = answer.total_exact === false ? `of at least ${total}` : `of ${total}`;
  return h(
    "div",
    { class: "pager" },
    previous,
    h("span", { class: "pager-status", role: "status", text: `${first}–${offset + count} ${of}` }),
    next,
  );
}

function showActivity(token) {
  const query = activityQuery({ limit: ACTIVITY_PAGE, offset: activity.offset });
  return view(token, "Activity", () => api("GET", `events/?${query}`), (answer) => {
    const rows = entries(answer).map(([id, item]) => ({
      id,
      cells: [
        oneLine(item.time),
        text(item.actor),
        text(item.action),
        oneLine(item.target),
        detailText(item.detail),
      ],
    }));
    const csv = h("a", {
      class: "button",
      id: "activity-csv",
      href: `${metaContent("remoteapp-admin-api")}events/?${activityQuery({
        format: "csv",
        limit: 10000,
      })}`,
      download: "events.csv",
      text: "Download CSV",
    });
    return box(
      "Activity",
      toolbar(actionButton("Refresh", () => route()), csv),
      activityFilters(),
      dataTable(["Time (UTC)", "Actor", "Action", "Target", "Detail"], rows, "No event matches."),
      pager(answer, ACTIVITY_PAGE, (offset) => {
        activity.offset = offset;
        route();
      }),
    );
  });
}

// ------------------------------------------------------------------------------- routing
const ROUTES = [
  [/^\/?$/, "stats", showStats],
  [/^\/containers\/?$/, "containers", showContainers],
  [/^\/users\/?$/, "users", showUsers],
  [/^\/users\/([^/]+)\/accounting\/?$/, "users", showAccounting],
  [/^\/groups\/([^/]+)\/accounting\/?$/, "users", (token, group) => showAccounting(token, null, group)],
  [/^\/applications\/?$/, "applications", showApplications],
  [/^\/activity\/?$/, "activity", showActivity],
];

function route() {
  shown += 1;
  const token = shown;
  let path = "/";
  try {
    path = decodeURIComponent(window.location.hash.replace(/^#/, "")) || "/";
  } catch {
    path = "";
  }
  for (const [pattern, name, render] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      markNav(name);
      render(token, ...match.slice(1));
      return;
    }
  }
  markNav(null);
  show(box("Not found", errorAlert("There is no such page here. Choose one from the menu.")));
}

let currentView = null;

function markNav(name) {
  currentView = name;
  if (name !== "containers" && containersTimer !== null) {
    window.clearInterval(containersTimer);
    containersTimer = null;
  }
  for (const link of elements.nav.querySelectorAll("a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

wireUserMenu(elements.menuButton, elements.menu);
window.addEventListener("hashchange", route);
// Choosing the view already shown loads it again (no hashchange then).
elements.nav.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (link && link.getAttribute("href") === window.location.hash) route();
});
route();
