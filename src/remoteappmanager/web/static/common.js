// What the user page and the admin page share: DOM building, the REST API, dialogs, the menu.
//
// Values from the API reach the page only through textContent and setAttribute on elements
// built here (see h), never as markup.

export function metaContent(name) {
  const meta = document.querySelector(`meta[name="${name}"]`);
  return meta ? meta.getAttribute("content") || "" : "";
}

const XSRF_TOKEN = metaContent("xsrf-token");
// A 128x128 PNG is a few kilobytes; anything this large is not an icon.
const MAX_ICON_CHARS = 1024 * 1024;
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

// ------------------------------------------------------------------------------- DOM
// An element with attributes ("text" sets its textContent, "on<event>" adds a listener) and
// children (nodes, or strings added as text). Null, undefined and false are left out.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") element.textContent = String(value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function text(value) {
  return typeof value === "string" ? value : "";
}

// An image label's base64 PNG as an image source, or the fallback when it is not one.
export function iconSource(value, fallback) {
  if (typeof value !== "string") return fallback;
  const compact = value.replace(/\s+/g, "");
  if (!compact || compact.length > MAX_ICON_CHARS || compact.length % 4 !== 0) return fallback;
  if (!BASE64_RE.test(compact)) return fallback;
  try {
    atob(compact);
  } catch {
    return fallback;
  }
  return `data:image/png;base64,${compact}`;
}

// ------------------------------------------------------------------------------- the API
export class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status;
  }
}

// A caller of the REST API under `base`: api(method, path, body) answers the JSON body, null
// for 204, and { location } for 201; it throws an ApiError with the service's message.
// Every request carries the page's XSRF token: the service answers cookie-authenticated
// requests from a browser only when it comes with them.
export function apiClient(base) {
  return async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const options = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (XSRF_TOKEN) headers["X-XSRFToken"] = XSRF_TOKEN;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(base + path, options);
    } catch {
      throw new ApiError(
        "NetworkError",
        "The service cannot be reached. Check your connection and try again.",
        0,
      );
    }
    if (!response.ok) {
      let type = "Unable";
      let message = `The service answered ${response.status} ${response.statusText}.`.trim();
      try {
        const error = await response.json();
        if (typeof error.type === "string") type = error.type;
        if (typeof error.message === "string" && error.message) message = error.message;
      } catch {
        // Not the API's JSON (a proxy error page): keep the generic message.
      }
      if (response.status === 401) {
        message = "Your session has ended. Reload the page to sign in again.";
      }
      throw new ApiError(type, message, response.status);
    }
    if (response.status === 201) return { location: response.headers.get("Location") || "" };
    if (response.status === 204) return null;
    return response.json();
  };
}

// ------------------------------------------------------------------------------- dialogs
// A modal dialog; resolves with the value of the button that closed it ("cancel" on Escape).
// A button with an async `action` runs it first (buttons disabled meanwhile) and closes the
// dialog unless it answers false. With `form`, Enter in a field presses the primary button.
export function openDialog({ title, body, buttons, className = "", form = false }) {
  return new Promise((resolve) => {
    const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
    const dialog = h("dialog", { class: `dialog ${className}`.trim(), "aria-labelledby": titleId });
    const footer = h("footer", { class: "dialog-footer" });
    const elements = [];
    let result = "cancel";
    let busy = false;

    const run = async (button) => {
      if (busy) return;
      if (button.action) {
        busy = true;
        for (const element of elements) element.disabled = true;
        let keepOpen = true;
        try {
          keepOpen = (await button.action()) === false;
        } finally {
          busy = false;
          for (const element of elements) element.disabled = false;
        }
        if (keepOpen) return;
      }
      result = button.value;
      dialog.close();
    };

    for (const button of buttons) {
      const classes = ["button"];
      if (button.primary) classes.push("button-primary");
      if (button.danger) classes.push("button-danger");
      const element = h("button", {
        type: "button",
        class: classes.join(" "),
        text: button.label,
        onclick: () => run(button),
      });
      elements.push(element);
      footer.append(element);
    }
    const content = form
      ? h(
          "form",
          {
            class: "dialog-body",
            novalidate: true,
            onsubmit: (event) => {
              event.preventDefault();
              const primary = buttons.find((button) => button.primary);
              if (primary) run(primary);
            },
          },
          ...body,
          // Enter submits a form only when it has a submit button.
          h("button", { type: "submit", hidden: true, tabindex: "-1", "aria-hidden": "true" }),
        )
      : h("div", { class: "dialog-body" }, ...body);
    dialog.append(h("h2", { id: titleId, class: "dialog-title", text: title }), content, footer);
    dialog.addEventListener("cancel", (event) => {
      if (busy) event.preventDefault();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    const primary = footer.querySelector(".button-primary") || footer.querySelector("button");
    if (primary && !dialog.querySelector("[autofocus]")) primary.focus();
  });
}

export function showError(title, message) {
  return openDialog({
    title,
    className: "dialog-error",
    body: [h("p", { class: "error-message", text: message })],
    buttons: [{ label: "Close", value: "close", primary: true }],
  });
}

// Resolves with "ok" or "cancel".
export function confirmDialog(title, message) {
  return openDialog({
    title,
    body: [h("p", { class: "confirm-message", text: message })],
    buttons: [
      { label: "Cancel", value: "cancel" },
      { label: "Ok", value: "ok", primary: true },
    ],
  });
}

// ------------------------------------------------------------------------------- the menu
export function wireUserMenu(menuButton, menu) {
  const setOpen = (open) => {
    menu.hidden = !open;
    menuButton.setAttribute("aria-expanded", String(open));
    if (open) {
      const first = menu.querySelector("a:not([hidden]), button");
      if (first) first.focus();
    }
  };
  menuButton.addEventListener("click", () => setOpen(menu.hidden));
  document.addEventListener("click", (event) => {
    if (!menu.hidden && !menu.contains(event.target) && !menuButton.contains(event.target)) {
      setOpen(false);
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !menu.hidden) {
      setOpen(false);
      menuButton.focus();
    }
  });
}
