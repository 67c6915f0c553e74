// The desktop viewer: noVNC's RFB client on a page of its own, served by the gate under a
// desktop's URL path (<urlpath>/.remoteapp-desktop/), connected to <urlpath>/websockify.
//
// It opens the WebSocket as soon as its modules are in (the page loads nothing else), scales
// the remote screen to the frame and asks the desktop to take the frame's size.

import RFB from "./core/rfb.js";

const RECONNECT_DELAY_MS = 2000;
const MAX_RECONNECTS = 5;

const screen = document.getElementById("noVNC_container");
const status = document.getElementById("status");
// <urlpath>/: this page lives in its .remoteapp-desktop/ folder.
const base = new URL("..", window.location.href);
const socketUrl = `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}${base.pathname}websockify`;
let reconnects = 0;

function show(message) {
  status.textContent = message;
  status.hidden = !message;
}

function connect() {
  const rfb = new RFB(screen, socketUrl, { shared: true });
  rfb.scaleViewport = true;
  rfb.resizeSession = true;
  rfb.addEventListener("connect", () => {
    reconnects = 0;
    document.documentElement.classList.add("noVNC_connected");
    show("");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (event) => {
    document.documentElement.classList.remove("noVNC_connected");
    if (!event.detail.clean && reconnects < MAX_RECONNECTS) {
      reconnects += 1;
      show("The connection to the desktop was lost; reconnecting…");
      setTimeout(connect, RECONNECT_DELAY_MS);
    } else {
      show("The desktop is disconnected. Reload to connect again.");
    }
  });
  rfb.addEventListener("desktopname", (event) => {
    document.title = String(event.detail.name || "Desktop");
  });
}

connect();
