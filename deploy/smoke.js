// Smoke check of a release before it serves anyone: two stock socket.io
// clients log in on the release's own instance, in a room of their own, see
// each other join, type, exchange a message and leave.
//
//     node deploy/smoke.js http://127.0.0.1:PORT ROOM
//
// Exits 0 and prints "smoke: ok", or exits 1 with one line saying which
// step failed (a broken login shows as "login ... timed out" or the
// server's own "login error").
"use strict";
const { io } = require("socket.io-client");

const [url, room] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 10000;
const sockets = [];

function fail(why) {
  console.error(`smoke: ${why}`);
  for (const socket of sockets) socket.disconnect();
  process.exit(1);
}

function client(name) {
  const socket = io(url, {
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
  });
  socket.on("connect_error", (err) => fail(`${name} cannot connect: ${err.message}`));
  for (const event of ["login error", "chat error"]) {
    socket.on(event, (data) => fail(`${name} got ${event}: ${JSON.stringify(data)}`));
  }
  sockets.push(socket);
  return socket;
}

function next(socket, event, what, match = () => true) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`${what}: timed out`), STEP_TIMEOUT_MS);
    const listener = (data) => {
      if (!match(data)) return;
      clearTimeout(timer);
      socket.off(event, listener);
      resolve(data);
    };
    socket.on(event, listener);
  });
}

async function main() {
  const a = client("smoke-a");
  const aLogin = next(a, "login", "login of smoke-a");
  a.emit("add user", "smoke-a", { room });
  await aLogin;

  const b = client("smoke-b");
  const joined = next(a, "user joined", "smoke-a sees smoke-b join", (d) => d.username === "smoke-b");
  const bLogin = next(b, "login", "login of smoke-b");
  b.emit("add user", "smoke-b", { room });
  const login = await bLogin;
  if (!(login.numUsers >= 2)) fail(`smoke-b's login counts ${login.numUsers} users`);
  await joined;

  const typing = next(a, "typing", "smoke-a sees smoke-b typing", (d) => d.username === "smoke-b");
  b.emit("typing");
  await typing;

  const text = `smoke ${Date.now() % 100000}`; // short: fits any MAX_MESSAGE_CHARS
  const message = next(b, "new message", "smoke-b receives the message",
    (d) => d.username === "smoke-a" && d.message === text);
  a.emit("new message", text);
  await message;

  const left = next(a, "user left", "smoke-a sees smoke-b leave", (d) => d.username === "smoke-b");
  b.disconnect();
  await left;
  a.disconnect();
  console.log("smoke: ok");
  process.exit(0);
}

main().catch((err) => fail(err.stack || String(err)));
