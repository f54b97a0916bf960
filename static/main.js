// The chat page: the socket.io chat example's client, grown into what people
// expect of a chat room: every message says whether it was stored, messages
// typed offline wait in an outbox (kept across a reload) and go out in order,
// who is online, the room and the connection state are always visible.
// Text from users only ever goes into the page through textContent.
(() => {
  "use strict";

  const FADE_TIME = 150; // ms
  // A pause this long ends "is typing"; "typing" goes out at most this often.
  const TYPING_TIMER_LENGTH = 1500; // ms
  const ACK_TIMEOUT = 10000; // ms: no acknowledgement by then: send again
  const RATE_LIMITED_RETRY = 1000; // ms: the server's bucket refills meanwhile
  // Readable on white (WCAG AA, at least 4.5:1).
  const COLORS = [
    "#c62828", "#8d4e0b", "#9a5b00", "#b33c00",
    "#2e7d32", "#1b5e20", "#00695c", "#0d47a1",
    "#1565c0", "#4527a0", "#7b1fa2", "#ad1457",
  ];
  // Refusals worth a retry button: the same message may pass later.
  const RETRYABLE = new Set(["storage_full", "unavailable", "server_error", "rate_limited", "not_logged_in"]);

  const $ = (selector) => document.querySelector(selector);
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const loginPage = $(".login.page");
  const chatPage = $(".chat.page");
  const usernameInput = $(".usernameInput");
  const loginError = $(".loginError");
  const messages = $(".messages");
  const chatArea = $(".chatArea");
  const inputMessage = $(".inputMessage");
  const messageHint = $(".messageHint");
  const connection = $(".connection");
  const peopleList = $(".peopleList");
  const peopleToggle = $(".peopleToggle");
  const takenOver = $(".takenOver");

  const params = new URLSearchParams(window.location.search);
  // The server's rule for room names: trimmed, lower-cased, then exactly
  // [a-z0-9_-]{1,32} ("Dev" is "dev"; "café" is refused).
  const ROOM_RULE = /^[a-z0-9_-]{1,32}$/;
  const rawRoom = (params.get("room") || "lobby").trim();
  const room = /^[\x00-\x7f]*$/.test(rawRoom) ? rawRoom.toLowerCase() : rawRoom;
  const storageKey = "chat:" + room;
  const outboxKey = "chat-outbox:" + room;
  const pageRelease = meta("release");

  // A page may pass socket.io options in ?transports=polling (tests use it).
  // Websocket first: one round trip fewer, and the load balancer counts the
  // connection where it spreads new sessions; long-polling if it fails.
  const transports = (params.get("transports") || "websocket,polling").split(",");

  let username = null;   // set once the server accepted a name
  let token = null;      // lets this page reclaim its name after a reconnect
  let lastId = null;     // the newest message id seen, for recovery
  const seenIds = new Set(); // ids already shown: history and live overlap
  const SEEN_IDS_KEPT = 2000;
  let loggedInBefore = false;
  let loggedIn = false;  // this connection's login was answered
  let paused = false;    // the name was taken over by another tab
  let typing = false;
  let lastTypingTime = 0;
  let sending = null;    // the outbox entry waiting for its acknowledgement
  let retryTimer = null;
  const people = new Map(); // name -> true: who is online in this room

  const saved = JSON.parse(sessionStorage.getItem(storageKey) || "null");
  if (saved) ({ username, token } = saved);
  // Messages not yet acknowledged, oldest first: {clientId, message, ts}.
  const outbox = JSON.parse(sessionStorage.getItem(outboxKey) || "[]");

  // The login rides on the connection itself (``auth``), so after a
  // reconnect no queued message can reach the server before the login.
  const socket = io({
    transports,
    tryAllTransports: true,
    reconnectionDelayMax: 3000, // ms: back soon after a deploy or restart
    timeout: 8000, // ms: a connection attempt that hangs is abandoned and retried
    auth: (cb) => cb(username ? { username, token, room, lastId } : {}),
  });

  // -- helpers ------------------------------------------------------------
  function compareIds(a, b) {
    const [am, as] = a.split("-").map(Number);
    const [bm, bs] = b.split("-").map(Number);
    return am - bm || as - bs;
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function getUsernameColor(name) {
    let hash = 7;
    for (let i = 0; i < name.length; i++) hash = name.charCodeAt(i) + (hash << 5) - hash;
    return COLORS[Math.abs(hash % COLORS.length)];
  }

  function newClientId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function nearBottom() {
    return chatArea.scrollHeight - chatArea.scrollTop - chatArea.clientHeight < 80;
  }

  function addElement(el, follow = true) {
    const stick = follow || nearBottom();
    el.style.opacity = 0;
    const typingLines = messages.querySelector(".typing");
    // "is typing" lines stay below the conversation.
    if (typingLines && !el.classList.contains("typing")) messages.insertBefore(el, typingLines);
    else messages.append(el);
    requestAnimationFrame(() => {
      el.style.transition = `opacity ${FADE_TIME}ms`;
      el.style.opacity = 1;
    });
    if (stick) chatArea.scrollTop = chatArea.scrollHeight;
  }

  function log(text, className = "") {
    addElement(element("li", `log ${className}`.trim(), text));
  }

  function addParticipantsMessage(numUsers) {
    log(numUsers === 1 ? "there's 1 participant" : `there are ${numUsers} participants`);
  }

  function timeOf(ts) {
    const time = element("time", "time");
    if (ts) {
      const date = new Date(ts);
      time.dateTime = date.toISOString();
      time.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      time.title = date.toLocaleString();
    }
    return time;
  }

  function messageLine(data, className) {
    const usernameSpan = element("span", "username", data.username);
    usernameSpan.style.color = getUsernameColor(data.username);
    const body = element("span", "messageBody", data.message);
    const li = element("li", className);
    li.dataset.username = data.username;
    if (data.id) li.dataset.id = data.id;
    li.append(usernameSpan, body);
    if (moderator && data.id && className.startsWith("message")) li.append(deleteButton(li));
    return li;
  }

  // -- moderation: the controls of a room's moderator ------------------------
  let moderator = false;
  const moderation = $(".moderation");

  // Every action asks first (with a reason) in a dialog the keyboard can use.
  function confirmAction(title, request) {
    $(".moderationTitle").textContent = title;
    $(".moderationReason").value = "";
    moderation.returnValue = "";
    moderation.onclose = () => {
      if (moderation.returnValue !== "confirm") return;
      const reason = $(".moderationReason").value.trim();
      socket.timeout(ACK_TIMEOUT).emit("moderate", { ...request, reason }, (err, ack) => {
        if (err || !ack || ack.error) log(`not done: ${(ack && ack.message) || "no answer"}`, "error");
      });
    };
    moderation.showModal();
  }

  function actionButton(label, title, request) {
    const button = element("button", "modAction", label);
    button.type = "button";
    button.setAttribute("aria-label", title);
    button.addEventListener("click", () => confirmAction(title, request));
    return button;
  }

  function deleteButton(li) {
    return actionButton("Delete", `Delete this message of ${li.dataset.username}`, {
      action: "delete",
      id: li.dataset.id,
    });
  }

  function personActions(name) {
    const span = element("span", "modActions");
    span.append(
      actionButton("Mute", `Mute ${name} for 10 minutes`, { action: "mute", name, seconds: 600 }),
      actionButton("Kick", `Kick ${name} out of the room`, { action: "kick", name }),
      actionButton("Ban", `Ban ${name} from the room`, { action: "ban", name }),
    );
    return span;
  }

  function showSlowMode(seconds) {
    const note = $(".slowMode");
    note.hidden = !seconds;
    note.textContent = seconds ? `Slow mode: one message every ${seconds} s` : "";
  }

  function addChatMessage(data, history = false) {
    const li = messageLine(data, history ? "message history" : "message");
    li.append(timeOf(data.ts));
    if (data.pending) setState(li, "pending", "waiting for the server to store it");
    addElement(li, false);
    return li;
  }

  function markSeen(id) {
    if (!id) return false;
    if (seenIds.has(id)) return true;
    seenIds.add(id);
    if (seenIds.size > SEEN_IDS_KEPT) seenIds.delete(seenIds.values().next().value);
    if (!lastId || compareIds(id, lastId) > 0) lastId = id;
    return false;
  }

  function ownLine(clientId) {
    return messages.querySelector(`.message.own[data-client-id="${CSS.escape(clientId)}"]`);
  }

  // A line is ours only when the server's answer to our own emit says so
  // (its acknowledgement, or "message stored" sent to this session alone):
  // nothing another user sends can mark, move or hide one of our lines.
  function showMessage(data, history = false) {
    // History and live broadcasts can overlap after a reconnect: show once.
    if (markSeen(data.id)) return;
    if (!history) removeChatTyping(data.username);
    const li = addChatMessage(data, history);
    if (data.pending && data.pendingId) li.dataset.pendingId = data.pendingId;
  }

  function addChatTyping(name) {
    if (typingLine(name)) return;
    addElement(messageLine({ username: name, message: "is typing" }, "message typing"), false);
  }

  function typingLine(name) {
    return [...messages.querySelectorAll(".typing")].find((li) => li.dataset.username === name);
  }

  function removeChatTyping(name) {
    const li = typingLine(name);
    if (li) li.remove();
  }

  // -- who is online --------------------------------------------------------
  function renderPeople(numUsers) {
    peopleList.replaceChildren();
    const names = [...people.keys()].sort((a, b) => a.localeCompare(b));
    for (const name of names) {
      const li = element("li", "person", name);
      li.style.color = getUsernameColor(name);
      li.dataset.username = name;
      if (name === username) li.append(element("span", "you", " (you)"));
      else if (moderator) li.append(personActions(name));
      peopleList.append(li);
    }
    const count = numUsers ?? names.length;
    $(".peopleCount").textContent = `(${count})`;
    $(".peopleNote").textContent =
      names.length < count ? `${count} people online; too many to list them all.` : "";
  }

  function setPeople(users, numUsers) {
    people.clear();
    for (const name of users || []) people.set(name, true);
    if (!users && username) people.set(username, true);
    renderPeople(numUsers);
  }

  peopleToggle.addEventListener("click", () => {
    const open = chatPage.classList.toggle("peopleOpen");
    peopleToggle.setAttribute("aria-expanded", String(open));
  });

  // -- connection state -------------------------------------------------------
  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  // Lost: reconnecting by itself, or offline while the browser has no network.
  function lost() {
    if (paused) return;
    if (!navigator.onLine || !socket.active) {
      setConnection("offline", "Offline: messages will be sent when you are back");
    } else {
      setConnection("reconnecting", "Reconnecting… messages will wait");
    }
  }

  socket.on("connect", () => {
    loggedIn = false; // until this connection's login is answered
    setConnection("connected", "Connected");
  });
  socket.on("disconnect", () => {
    sending = null; // its acknowledgement will not come on this connection
    lost();
  });
  socket.io.on("reconnect_attempt", lost);
  socket.io.on("reconnect_failed", lost);
  // The browser knows it lost the network before any timeout does: drop the
  // transport now (the socket reconnects by itself), and try again when the
  // network is back instead of waiting for the next backoff step.
  window.addEventListener("offline", () => {
    if (paused) return;
    if (socket.io.engine) socket.io.engine.close();
    lost();
  });
  window.addEventListener("online", () => {
    if (!paused && !socket.connected) socket.connect();
  });

  // -- the outbox -------------------------------------------------------------
  function saveOutbox() {
    sessionStorage.setItem(outboxKey, JSON.stringify(outbox));
  }

  function setState(li, state, detail = "") {
    li.dataset.state = state;
    let status = li.querySelector(".status");
    if (!status) {
      status = element("span", "status");
      li.append(status);
    }
    const words = {
      pending: detail || "sending…",
      stored: "sent",
      failed: `not sent: ${detail}`,
    };
    status.textContent = state === "stored" ? "✓" : words[state];
    status.setAttribute("aria-label", words[state]);
    status.title = words[state];
  }

  function showOwn(entry) {
    const li = messageLine({ username, message: entry.message }, "message own");
    li.dataset.clientId = entry.clientId;
    li.append(timeOf(entry.ts));
    setState(li, "pending", socket.connected ? "sending…" : "waiting for the connection");
    addElement(li);
    return li;
  }

  function stored(clientId, ack) {
    const li = ownLine(clientId);
    if (!li) return;
    if (ack.id) {
      // Shown from history before this acknowledgement came (a resend after
      // a reconnect): the line typed here stands for it.
      const shown = messages.querySelector(`.message:not(.own)[data-id="${CSS.escape(ack.id)}"]`);
      if (shown) shown.remove();
      markSeen(ack.id);
      li.dataset.id = ack.id;
    }
    if (ack.ts) li.querySelector("time").replaceWith(timeOf(ack.ts));
    setState(li, "stored");
  }

  function failed(entry, ack) {
    const li = ownLine(entry.clientId) || showOwn(entry);
    setState(li, "failed", ack.message || ack.error);
    if (RETRYABLE.has(ack.error) && !li.querySelector(".retry")) {
      const retry = element("button", "retry", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => {
        retry.remove();
        outbox.push({ ...entry });
        saveOutbox();
        setState(li, "pending");
        flush();
      });
      li.append(retry);
    }
  }

  // One message in flight at a time, oldest first: they reach the room in
  // the order they were typed, and a resend after a reconnect carries the
  // same clientId, so the server stores it once.
  function flush() {
    if (sending || paused || !socket.connected || !username || !loggedIn) return;
    const entry = outbox[0];
    if (!entry) return;
    sending = entry;
    const li = ownLine(entry.clientId) || showOwn(entry);
    setState(li, "pending", "sending…");
    socket
      .timeout(ACK_TIMEOUT)
      .emit("new message", entry.message, { clientId: entry.clientId }, (err, ack) => {
        if (sending !== entry) return; // a reconnect resent it meanwhile
        sending = null;
        if (err) return flush(); // no acknowledgement: the same message again
        if (ack && ack.error === "rate_limited") {
          setState(li, "pending", "waiting: sending too fast");
          clearTimeout(retryTimer);
          retryTimer = setTimeout(flush, RATE_LIMITED_RETRY);
          return;
        }
        outbox.shift();
        saveOutbox();
        if (!ack || ack.error) failed(entry, ack || { message: "no answer" });
        else if (ack.pending) setState(li, "pending", "waiting for the server to store it");
        else stored(entry.clientId, ack);
        flush();
      });
  }

  function sendMessage() {
    const message = inputMessage.value.trim();
    if (!message || !username || paused) return;
    if (tooLong(message)) return;
    inputMessage.value = "";
    updateHint();
    const entry = { clientId: newClientId(), message, ts: Date.now() };
    outbox.push(entry);
    saveOutbox();
    showOwn(entry);
    stopTyping();
    flush();
  }

  function maxChars() {
    return Number(meta("max-message-chars")) || 2000;
  }

  function tooLong(message) {
    return [...message].length > maxChars();
  }

  function updateHint() {
    const length = [...inputMessage.value.trim()].length;
    const max = maxChars();
    if (length > max) {
      const over = length - max;
      messageHint.textContent =
        `${over} character${over === 1 ? "" : "s"} too long (at most ${max}); shorten it to send.`;
      messageHint.dataset.over = "true";
    } else {
      messageHint.textContent = length > max * 0.9 ? `${max - length} characters left` : "";
      delete messageHint.dataset.over;
    }
  }

  // -- typing -----------------------------------------------------------------
  function stopTyping() {
    if (typing) socket.emit("stop typing");
    typing = false;
  }

  function updateTyping() {
    updateHint();
    if (!username || paused || !socket.connected) return;
    if (!typing) {
      typing = true;
      socket.emit("typing");
    }
    lastTypingTime = Date.now();
    setTimeout(() => {
      if (typing && Date.now() - lastTypingTime >= TYPING_TIMER_LENGTH) stopTyping();
    }, TYPING_TIMER_LENGTH);
  }

  // -- pages --------------------------------------------------------------------
  function showChat() {
    loginPage.hidden = true;
    chatPage.hidden = false;
    if (document.activeElement === document.body || document.activeElement === usernameInput) {
      inputMessage.focus();
    }
  }

  function showLogin(reason) {
    chatPage.hidden = true;
    loginPage.hidden = false;
    loginError.textContent = reason || "";
    usernameInput.focus();
  }

  function showRoomPicker(reason) {
    chatPage.hidden = true;
    loginPage.hidden = false;
    $(".login .form").hidden = true;
    $(".roomForm").hidden = false;
    $(".roomForm label").textContent = reason;
    $(".roomInput").value = "";
    $(".roomInput").focus();
  }

  function setUsername() {
    const name = usernameInput.value.trim();
    if (!name) return;
    loginError.textContent = "";
    // A token of our own from the first login: the server holds the name
    // for it across a deploy or a dropped connection, so this page comes
    // back silently where a client without one is announced as left.
    if (!token) token = newToken();
    socket.emit("add user", name, { room, token });
  }

  function newToken() {
    const bytes = crypto.getRandomValues(new Uint8Array(24));
    return btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, (c) => ({ "+": "-", "/": "_", "=": "" })[c]);
  }

  $(".login .form").addEventListener("submit", (e) => {
    e.preventDefault();
    setUsername();
  });
  $(".roomForm").addEventListener("submit", (e) => {
    e.preventDefault();
    const next = $(".roomInput").value.trim().toLowerCase();
    if (!ROOM_RULE.test(next)) {
      $(".roomForm label").textContent = `"${next}" is not a room name: use 1 to 32 of a-z, 0-9, - and _.`;
      return;
    }
    const url = new URL(window.location.href);
    url.searchParams.set("room", next);
    window.location.assign(url);
  });
  $(".inputForm").addEventListener("submit", (e) => {
    e.preventDefault();
    sendMessage();
  });
  inputMessage.addEventListener("input", updateTyping);
  $(".takeBack").addEventListener("click", () => {
    paused = false;
    takenOver.hidden = true;
    inputMessage.disabled = false;
    setConnection("reconnecting", "Reconnecting…");
    socket.connect();
  });
  $(".releaseNotice .reload").addEventListener("click", () => window.location.reload());
  let releaseDismissed = false;
  $(".releaseNotice .dismiss").addEventListener("click", () => {
    releaseDismissed = true;
    $(".releaseNotice").hidden = true;
    inputMessage.focus();
  });

  $(".roomHint").textContent =
    room === "lobby" ? "You are joining the lobby." : `You are joining room ${room}.`;
  if (!ROOM_RULE.test(room)) {
    showRoomPicker(`"${rawRoom}" is not a room name: pick one of 1 to 32 a-z, 0-9, - and _.`);
  } else if (username) {
    // A reload: straight back to the conversation, with the messages that
    // were still waiting, while the connection logs in again.
    $(".roomName").textContent = room === "lobby" ? "Lobby" : `Room ${room}`;
    showChat();
    for (const entry of outbox) showOwn(entry);
  } else {
    usernameInput.focus();
  }

  // -- socket events ------------------------------------------------------
  socket.on("login", (data) => {
    ({ username, token } = data);
    loggedIn = true;
    sessionStorage.setItem(storageKey, JSON.stringify({ username, token }));
    $(".roomName").textContent = data.room === "lobby" ? "Lobby" : `Room ${data.room}`;
    document.title = `${data.room} – Socket.IO Chat`;
    moderator = Boolean(data.moderator);
    chatPage.classList.toggle("moderator", moderator);
    showSlowMode(data.slowMode);
    showChat();
    setPeople(data.users, data.numUsers);
    if (!loggedInBefore) {
      log(data.room === "lobby" ? "Welcome to Socket.IO Chat" : `Welcome to Socket.IO Chat, room ${data.room}`);
      addParticipantsMessage(data.numUsers);
    }
    loggedInBefore = true;
    if (data.release && pageRelease && data.release !== pageRelease && !releaseDismissed) {
      $(".releaseNotice").hidden = false;
    }
  });

  socket.on("login error", (data) => {
    if (data.reason === "invalid_room") {
      showRoomPicker(data.message);
      return;
    }
    username = null;
    token = null;
    loggedIn = false;
    sessionStorage.removeItem(storageKey);
    showLogin(data.message);
  });

  // Refusals of messages come with their acknowledgement; the rest (an
  // event sent too fast, before a login) show as a line.
  socket.on("chat error", (data) => {
    if (data.event === "new message" || data.event === "typing" || data.event === "stop typing") return;
    log(`not done: ${data.message}`, "error");
  });

  socket.on("history", (data) => {
    const fresh = data.messages.filter((m) => !seenIds.has(m.id));
    if (data.dropped && data.since) log("some messages were missed while you were away");
    if (fresh.length && !data.since) log("earlier messages", "divider");
    fresh.forEach((m) => showMessage(m, !data.since));
    if (fresh.length && !data.since) log("new messages", "divider");
    flush();
  });

  socket.on("new message", (data) => showMessage(data));

  // A message kept while the server could not store it now has its id. Ours
  // come with our clientId (sent to this session only); others' name the
  // pendingId the server gave their line.
  socket.on("message stored", (data) => {
    if (data.clientId) return stored(data.clientId, data);
    markSeen(data.id);
    if (!data.pendingId) return;
    const li = messages.querySelector(`.message[data-pending-id="${CSS.escape(data.pendingId)}"]`);
    if (!li) return;
    li.dataset.id = data.id;
    if (li.querySelector(".status")) li.querySelector(".status").remove();
  });

  socket.on("slow mode", (data) => {
    showSlowMode(data.seconds);
    log(data.seconds ? `slow mode: one message every ${data.seconds} s` : "slow mode is off");
  });

  // Someone is put out of the room by a moderator; if it is this page, it
  // goes back to the login with the reason.
  socket.on("kicked", (data) => {
    if (data.username === username) {
      username = null;
      token = null;
      loggedIn = false;
      sessionStorage.removeItem(storageKey);
      showLogin(`You were removed from the room by a moderator: ${data.reason}`);
      return;
    }
    log(`${data.username} was removed by a moderator`);
  });

  // A moderator removed a message: its line says so instead.
  socket.on("message deleted", (data) => {
    const li = messages.querySelector(`.message[data-id="${CSS.escape(String(data.id))}"]`);
    if (!li) return;
    li.querySelector(".messageBody").textContent = "message removed by a moderator";
    li.classList.add("removed");
    const button = li.querySelector(".modAction");
    if (button) button.remove();
  });

  socket.on("user joined", (data) => {
    people.set(data.username, true);
    renderPeople(data.numUsers);
    log(`${data.username} joined`);
    addParticipantsMessage(data.numUsers);
  });

  socket.on("user left", (data) => {
    people.delete(data.username);
    renderPeople(data.numUsers);
    log(`${data.username} left`);
    addParticipantsMessage(data.numUsers);
    removeChatTyping(data.username);
  });

  socket.on("typing", (data) => addChatTyping(data.username));
  socket.on("stop typing", (data) => removeChatTyping(data.username));

  // The same name logged in from another tab (a duplicated tab shares this
  // one's token): this page stops, says so, and can take the name back.
  socket.on("taken over", () => {
    paused = true;
    takenOver.hidden = false;
    inputMessage.disabled = true;
    setConnection("paused", "Paused: open in another tab");
    $(".takeBack").focus();
  });
})();
