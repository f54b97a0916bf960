// The chat page: the socket.io chat example's client, with login errors,
// history, missed-message recovery and rooms. Text from users only ever goes
// into the page through textContent.
(() => {
  "use strict";

  const FADE_TIME = 150; // ms
  const TYPING_TIMER_LENGTH = 400; // ms
  const COLORS = [
    "#e21400", "#91580f", "#f8a700", "#f78b00",
    "#58dc00", "#287b00", "#a8f07a", "#4ae8c4",
    "#3b88eb", "#3824aa", "#a700ff", "#d300e7",
  ];

  const $ = (selector) => document.querySelector(selector);
  const loginPage = $(".login.page");
  const chatPage = $(".chat.page");
  const usernameInput = $(".usernameInput");
  const loginError = $(".loginError");
  const messages = $(".messages");
  const chatArea = $(".chatArea");
  const inputMessage = $(".inputMessage");

  const params = new URLSearchParams(window.location.search);
  // The server's rule for room names: trimmed, lower-cased, then exactly
  // [a-z0-9_-]{1,32} ("Dev" is "dev"; "café" is refused).
  const ROOM_RULE = /^[a-z0-9_-]{1,32}$/;
  const rawRoom = (params.get("room") || "lobby").trim();
  const room = /^[\x00-\x7f]*$/.test(rawRoom) ? rawRoom.toLowerCase() : rawRoom;
  const storageKey = "chat:" + room;

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
  let typing = false;
  let lastTypingTime = 0;

  const saved = JSON.parse(sessionStorage.getItem(storageKey) || "null");
  if (saved) ({ username, token } = saved);

  // The login rides on the connection itself (``auth``), so after a
  // reconnect no queued message can reach the server before the login.
  const socket = io({
    transports,
    tryAllTransports: true,
    reconnectionDelayMax: 3000, // ms: back soon after a deploy or restart
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

  function scrollDown() {
    chatArea.scrollTop = chatArea.scrollHeight;
  }

  function addElement(el, prepend) {
    el.style.opacity = 0;
    if (prepend) messages.prepend(el);
    else messages.append(el);
    requestAnimationFrame(() => {
      el.style.transition = `opacity ${FADE_TIME}ms`;
      el.style.opacity = 1;
    });
    scrollDown();
  }

  function log(text) {
    addElement(element("li", "log", text));
  }

  function addParticipantsMessage(numUsers) {
    log(numUsers === 1 ? "there's 1 participant" : `there are ${numUsers} participants`);
  }

  function addChatMessage(data, typingLine = false) {
    const usernameSpan = element("span", "username", data.username);
    usernameSpan.style.color = getUsernameColor(data.username);
    const body = element("span", "messageBody", data.message);
    const li = element("li", typingLine ? "message typing" : "message");
    li.dataset.username = data.username;
    if (data.id) li.dataset.id = data.id;
    if (data.ts) li.title = new Date(data.ts).toLocaleString();
    li.append(usernameSpan, body);
    addElement(li);
  }

  function markSeen(id) {
    if (!id) return false;
    if (seenIds.has(id)) return true;
    seenIds.add(id);
    if (seenIds.size > SEEN_IDS_KEPT) seenIds.delete(seenIds.values().next().value);
    if (!lastId || compareIds(id, lastId) > 0) lastId = id;
    return false;
  }

  function showMessage(data) {
    // History and live broadcasts can overlap after a reconnect: show once.
    if (markSeen(data.id)) return;
    removeChatTyping(data.username);
    addChatMessage(data);
  }

  function addChatTyping(name) {
    if (typingLine(name)) return;
    addChatMessage({ username: name, message: "is typing" }, true);
  }

  function typingLine(name) {
    return [...messages.querySelectorAll(".typing")].find((li) => li.dataset.username === name);
  }

  function removeChatTyping(name) {
    const li = typingLine(name);
    if (li) li.remove();
  }

  function showChat() {
    loginPage.hidden = true;
    chatPage.hidden = false;
    inputMessage.focus();
  }

  function showLogin(reason) {
    chatPage.hidden = true;
    loginPage.hidden = false;
    loginError.textContent = reason || "";
    usernameInput.focus();
  }

  // -- user actions -------------------------------------------------------
  function setUsername() {
    const name = usernameInput.value.trim();
    if (!name) return;
    loginError.textContent = "";
    socket.emit("add user", name, { room });
  }

  function sendMessage() {
    const message = inputMessage.value.trim();
    if (!message || !username) return;
    inputMessage.value = "";
    addChatMessage({ username, message });
    // The acknowledgement carries the id, so history will not repeat it.
    socket.emit("new message", message, (ack) => ack && markSeen(ack.id));
    typing = false;
    socket.emit("stop typing");
  }

  function updateTyping() {
    if (!username) return;
    if (!typing) {
      typing = true;
      socket.emit("typing");
    }
    lastTypingTime = Date.now();
    setTimeout(() => {
      if (typing && Date.now() - lastTypingTime >= TYPING_TIMER_LENGTH) {
        socket.emit("stop typing");
        typing = false;
      }
    }, TYPING_TIMER_LENGTH);
  }

  $(".login .form").addEventListener("submit", (e) => {
    e.preventDefault();
    setUsername();
  });
  $(".inputForm").addEventListener("submit", (e) => {
    e.preventDefault();
    sendMessage();
  });
  inputMessage.addEventListener("input", updateTyping);
  loginPage.addEventListener("click", () => usernameInput.focus());

  // -- socket events ------------------------------------------------------
  socket.on("login", (data) => {
    ({ username, token } = data);
    sessionStorage.setItem(storageKey, JSON.stringify({ username, token }));
    showChat();
    if (loggedInBefore) {
      log("you have been reconnected");
    } else {
      log(`Welcome to Socket.IO Chat – ${room === "lobby" ? "" : "room " + room}`);
    }
    loggedInBefore = true;
    addParticipantsMessage(data.numUsers);
  });

  if (!ROOM_RULE.test(room)) {
    showLogin("A room name is 1 to 32 of a-z, 0-9, - and _.");
  }

  socket.on("login error", (data) => {
    username = null;
    token = null;
    sessionStorage.removeItem(storageKey);
    showLogin(data.message);
  });

  socket.on("chat error", (data) => log(`not sent: ${data.message}`));

  socket.on("history", (data) => {
    if (data.dropped && data.since) log("some messages were missed while you were away");
    data.messages.forEach(showMessage);
  });

  socket.on("new message", showMessage);

  socket.on("user joined", (data) => {
    log(`${data.username} joined`);
    addParticipantsMessage(data.numUsers);
  });

  socket.on("user left", (data) => {
    log(`${data.username} left`);
    addParticipantsMessage(data.numUsers);
    removeChatTyping(data.username);
  });

  socket.on("typing", (data) => addChatTyping(data.username));
  socket.on("stop typing", (data) => removeChatTyping(data.username));

  // A lost transport (network, server restart) reconnects by itself; a
  // server that closed this socket on purpose (the same name logged in from
  // a newer connection) is not retried, or two pages would take turns.
  socket.on("disconnect", () => {
    if (loggedInBefore) log("you have been disconnected");
  });

  socket.io.on("reconnect_error", () => {
    if (loggedInBefore) log("attempt to reconnect has failed");
  });

  usernameInput.focus();
})();
