// The reference peer: the socket.io chat example's server on Node, with the
// Redis adapter and the same semantics as ours where it matters for load:
// numUsers is the cluster total (a Redis hash of names per room), messages
// and typing go to the others, a login may ride on the connection's `auth`,
// a name comes back to whoever holds its token (a reconnect after a lost
// instance), and the names of an instance that died are released by the
// others (a heartbeat key with a TTL, the same timings as ours). What it
// still does not do: history, catch-up, rate limits, input checks.
// One process per instance, like ours.
//
// PEER_WORK=equal makes it the fair second peer: with Redis it also does the
// Redis work ours does per login and per message, with the same commands
// (ours: chat/events/login.py, chat/messages/stream.py): a login reads the
// moderation keys (five GETs in one pipeline), claims its name (the join
// script), is admitted by our room cap's script and reads the room's newest
// 50 messages, which it sends as `history`; a message is stored by our store
// script (capped stream, byte count, trim, expiry) before it is broadcast
// with its id. Still not done: input checks, rate limits, metrics,
// the outbox and acknowledgements, catch-up from a lastId.
// Usage: PORT=... REDIS_URL=... [PEER_WORK=equal] node server.js
const crypto = require("crypto");
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 5060);
const redisUrl = process.env.REDIS_URL;
const instance = `${process.pid}-${port}`;
const HEARTBEAT_MS = 5000; // ours: PRESENCE_HEARTBEAT_S
const TTL_S = 15; // ours: PRESENCE_TTL_S
const EQUAL = process.env.PEER_WORK === "equal" && Boolean(redisUrl);
// Ours' defaults: HISTORY_LENGTH, HISTORY_RETAIN, HISTORY_ROOM_MAX_BYTES,
// HISTORY_TTL_S, MAX_ROOMS, CLIENT_ROOMS_PER_HOUR (lifted in the bench).
const HISTORY_LENGTH = 50;
const RETAIN = 1000;
const ROOM_BYTES = 1024 * 1024;
const HISTORY_TTL_S = 7 * 24 * 3600;
const MAX_ROOMS = 1000;
const http = createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ status: "ok", pid: process.pid }));
});
const io = new Server(http, { maxHttpBufferSize: 64 * 1024 });

// KEYS: room names, this instance's members. ARGV: name, token, sid,
// instance, room. Returns {count or -1 when the name is held, replaced sid}.
const JOIN = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local replaced = ''
if cur then
  local holder = cjson.decode(cur)
  if holder.token ~= ARGV[2] then return {-1, ''} end
  replaced = holder.sid
  redis.call('HDEL', 'peer:instance:' .. holder.instance .. ':members', holder.sid)
end
redis.call('HSET', KEYS[1], ARGV[1],
  cjson.encode({token = ARGV[2], sid = ARGV[3], instance = ARGV[4]}))
redis.call('HSET', KEYS[2], ARGV[3], cjson.encode({room = ARGV[5], name = ARGV[1]}))
return {redis.call('HLEN', KEYS[1]), replaced}`;

// KEYS: room names, this instance's members. ARGV: name, sid. Returns the
// count, or -1 when a newer login holds the name.
const LEAVE = `
redis.call('HDEL', KEYS[2], ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).sid == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return redis.call('HLEN', KEYS[1])
end
return -1`;

// KEYS: the set of instances. ARGV: a dead instance. The caller that wins
// the SREM releases its names: {room, name, count, ...}.
const REAP = `
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local mkey = 'peer:instance:' .. ARGV[1] .. ':members'
local flat = redis.call('HGETALL', mkey)
local out = {}
for i = 1, #flat, 2 do
  local m = cjson.decode(flat[i + 1])
  local rkey = 'peer:room:' .. m.room
  local cur = redis.call('HGET', rkey, m.name)
  if cur and cjson.decode(cur).sid == flat[i] then
    redis.call('HDEL', rkey, m.name)
    table.insert(out, m.room)
    table.insert(out, m.name)
    table.insert(out, redis.call('HLEN', rkey))
  end
end
redis.call('DEL', mkey)
return out`;

// With PEER_WORK=equal, bench/run.py hands over our own scripts: the room
// cap's (chat/presence/rooms.py) and the store's (chat/messages/stream.py).
const ADMIT = process.env.PEER_ADMIT_SCRIPT;
const STORE = process.env.PEER_STORE_SCRIPT;

const local = new Map(); // room -> Map name -> {token, sid}, when there is no Redis
let store = null;
const sha = {};

async function join(room, name, token, sid) {
  if (!store) {
    const names = local.get(room) || new Map();
    local.set(room, names);
    const holder = names.get(name);
    if (holder && holder.token !== token) return [-1, ""];
    names.set(name, { token, sid });
    return [names.size, holder ? holder.sid : ""];
  }
  const keys = [`peer:room:${room}`, `peer:instance:${instance}:members`];
  const args = [name, token, sid, instance, room];
  return store.evalSha(sha.join, { keys, arguments: args });
}

async function leave(room, name, sid) {
  if (!store) {
    const names = local.get(room);
    if (names.get(name)?.sid !== sid) return -1;
    names.delete(name);
    return names.size;
  }
  const keys = [`peer:room:${room}`, `peer:instance:${instance}:members`];
  return store.evalSha(sha.leave, { keys, arguments: [name, sid] });
}

// Ours reads the bans by name, address and room, the room's moderators
// and its slow mode before it claims a name (chat/moderation/store.py).
async function moderation(name, address, room) {
  const key = name.toLowerCase();
  return store
    .multi()
    .get(`peer:ban:name:${key}`)
    .get(`peer:ban:address:${address}`)
    .get(`peer:ban:room:${room}:${key}`)
    .hGet(`peer:moderators:${room}`, key)
    .get(`peer:slow:${room}`)
    .execAsPipeline();
}

async function admit(room, address, numUsers) {
  const keys = ["peer:rooms", `peer:opened:${address}`, `peer:room:${room}`, `peer:stream:${room}`];
  const now = Math.floor(Date.now() / 1000);
  const args = [now, HISTORY_TTL_S, room, MAX_ROOMS, room === "lobby" ? 1 : 0, 0, numUsers > 1 ? 1 : 0];
  return store.evalSha(sha.admit, { keys, arguments: args.map(String) });
}

async function newest(room) {
  const rows = await store.xRevRange(`peer:stream:${room}`, "+", "-", { COUNT: HISTORY_LENGTH });
  return rows.reverse().map((r) => ({ id: r.id, username: r.message.u, message: r.message.m }));
}

// Our store script's call on one Redis, without a client id, a mute or a
// slow mode (the generator never sets them): their keys are '', the name
// the script is told means "unchecked". Returns {1, id, prev}.
async function stored(room, username, message) {
  const keys = [`peer:stream:${room}`, "", `peer:stream:${room}:bytes`, "", "", ""];
  const size = Buffer.byteLength(username) + Buffer.byteLength(message);
  const args = [RETAIN, username, message, "", HISTORY_TTL_S, 0, ROOM_BYTES, size, ""];
  return store.evalSha(sha.store, { keys, arguments: args.map(String) });
}

async function heartbeat() {
  await store.set(`peer:instance:${instance}:alive`, "1", { EX: TTL_S });
  await store.sAdd("peer:instances", instance);
  for (const other of await store.sMembers("peer:instances")) {
    if (other === instance || (await store.exists(`peer:instance:${other}:alive`))) continue;
    const out = await store.evalSha(sha.reap, { keys: ["peer:instances"], arguments: [other] });
    for (let i = 0; i < out.length; i += 3) {
      io.to(out[i]).emit("user left", { username: out[i + 1], numUsers: out[i + 2] });
    }
  }
}

io.on("connection", (socket) => {
  let username = null;
  let room = "lobby";
  let loggingIn = false;
  const login = async (name, options) => {
    if (username || loggingIn || typeof name !== "string") return;
    loggingIn = true;
    if (options && typeof options.room === "string") room = options.room;
    let token = options && options.token;
    if (typeof token !== "string" || token.length < 16) token = crypto.randomBytes(18).toString("base64url");
    if (EQUAL) await moderation(name, socket.handshake.address, room);
    const [numUsers, replaced] = await join(room, name, token, socket.id);
    loggingIn = false;
    if (numUsers < 0) return socket.emit("login error", { reason: "name_taken" });
    if (EQUAL && (await admit(room, socket.handshake.address, numUsers)) !== 1) {
      await leave(room, name, socket.id);
      return socket.emit("login error", { reason: "too_many_rooms" });
    }
    const history = EQUAL ? await newest(room) : null;
    username = name;
    socket.join(room);
    socket.emit("login", { numUsers, username, room, token });
    if (replaced) io.in(replaced).disconnectSockets(true);
    else socket.to(room).emit("user joined", { username, numUsers });
    if (history) socket.emit("history", history);
  };
  socket.on("add user", login);
  const auth = socket.handshake.auth;
  if (auth && typeof auth.username === "string") login(auth.username, auth);
  socket.on("new message", async (message) => {
    if (!username || typeof message !== "string") return;
    if (!EQUAL) return socket.to(room).emit("new message", { username, message });
    const [, id] = await stored(room, username, message);
    socket.to(room).emit("new message", { username, message, id });
  });
  socket.on("typing", () => username && socket.to(room).emit("typing", { username }));
  socket.on("stop typing", () => username && socket.to(room).emit("stop typing", { username }));
  socket.on("disconnect", async () => {
    if (!username) return;
    const numUsers = await leave(room, username, socket.id);
    if (numUsers >= 0) socket.to(room).emit("user left", { username, numUsers });
  });
});

async function main() {
  if (redisUrl) {
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    store = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect(), store.connect()]);
    io.adapter(createAdapter(pub, sub));
    sha.join = await store.scriptLoad(JOIN);
    sha.leave = await store.scriptLoad(LEAVE);
    sha.reap = await store.scriptLoad(REAP);
    if (EQUAL) {
      sha.admit = await store.scriptLoad(ADMIT);
      sha.store = await store.scriptLoad(STORE);
    }
    await heartbeat();
    setInterval(() => heartbeat().catch((err) => console.error("heartbeat", err.message)), HEARTBEAT_MS);
  }
  http.listen(port, "127.0.0.1");
}
main();
process.on("SIGTERM", () => process.exit(0));
