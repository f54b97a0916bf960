// The reference peer: the socket.io chat example's server on Node, with the
// Redis adapter and the same semantics as ours where it matters for load:
// numUsers is the cluster total (a Redis hash of names per room), messages
// and typing go to the others. One process per instance, like ours.
// Usage: PORT=... REDIS_URL=... node server.js
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 5060);
const redisUrl = process.env.REDIS_URL;
const http = createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ status: "ok", pid: process.pid }));
});
const io = new Server(http, { maxHttpBufferSize: 64 * 1024 });

const local = new Map(); // room -> Set of names, when there is no Redis
let store = null;

async function join(room, name) {
  if (!store) {
    const names = local.get(room) || new Set();
    local.set(room, names);
    if (names.has(name)) return -1;
    names.add(name);
    return names.size;
  }
  const added = await store.hSetNX(`peer:room:${room}`, name, "1");
  if (!added) return -1;
  return store.hLen(`peer:room:${room}`);
}

async function leave(room, name) {
  if (!store) {
    const names = local.get(room);
    names.delete(name);
    return names.size;
  }
  await store.hDel(`peer:room:${room}`, name);
  return store.hLen(`peer:room:${room}`);
}

io.on("connection", (socket) => {
  let username = null;
  let room = "lobby";
  socket.on("add user", async (name, options) => {
    if (username || typeof name !== "string") return;
    if (options && typeof options.room === "string") room = options.room;
    const numUsers = await join(room, name);
    if (numUsers < 0) return socket.emit("login error", { reason: "name_taken" });
    username = name;
    socket.join(room);
    socket.emit("login", { numUsers });
    socket.to(room).emit("user joined", { username, numUsers });
  });
  socket.on("new message", (message) => {
    if (!username || typeof message !== "string") return;
    socket.to(room).emit("new message", { username, message });
  });
  socket.on("typing", () => username && socket.to(room).emit("typing", { username }));
  socket.on("stop typing", () => username && socket.to(room).emit("stop typing", { username }));
  socket.on("disconnect", async () => {
    if (!username) return;
    const numUsers = await leave(room, username);
    socket.to(room).emit("user left", { username, numUsers });
  });
});

async function main() {
  if (redisUrl) {
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    store = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect(), store.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  http.listen(port, "127.0.0.1");
}
main();
process.on("SIGTERM", () => process.exit(0));
