// One load generator for both servers: socket.io-client over websocket.
// Usage: node loadgen.js '<json spec>'; prints JSON lines.
//   {"mode":"hold","url":...}  then stdin lines "target N" / "quit":
//       grows to N logged-in clients, prints {"ready":N,"errors":E}
//   {"mode":"fanout","senders":[{"url","count"}],"receivers":[{"url","count"}],
//    "rate":msgs_per_s,"duration":s}: everyone joins, senders send at the
//       aggregate rate, every member records send->receive latency.
//   {"mode":"rooms","rooms":[{"name","members":[{"url","count"}]}],
//    "rate":msgs_per_s,"duration":s}: each room's members join it on their
//       instances; the first member of each room sends, rooms in turn, at the
//       aggregate rate (bench/scale.py's model of many rooms).
//   {"mode":"churn","urls":[...],"rooms":20,"batch":50,"duration":s}: batch
//       after batch of users connect (websocket, instances in turn), log in
//       to one of the rooms, send one message and disconnect; prints the
//       completed logins (a reconnect storm's unit of work).
//   {"mode":"recover","url":...,"users":5000,"roomSize":50,"rate":20,
//    "baseline":3,"timeout":60}: users log in through `auth` (the page's
//       protocol and reconnect settings) across the instances behind the
//       load balancer and talk at `rate` messages/s; after `baseline` s it
//       prints {phase:"kill"} and waits for "killed <epoch ms>" on stdin.
//       Prints the seconds until every user whose connection dropped is
//       logged in again, and the message latency of the users who never
//       dropped, before and during that storm.
const { io } = require("socket.io-client");
const readline = require("readline");

const spec = JSON.parse(process.argv[2]);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const now = () => performance.timeOrigin + performance.now();
let nextId = 0;

// Hold mode spreads users over rooms of ROOM_SIZE: every join is announced
// to the room, so one huge room would measure that broadcast, not memory.
const ROOM_SIZE = 100;

function connect(url, room = "lobby") {
  return new Promise((resolve) => {
    const id = nextId++;
    const name = `u${process.pid}-${id}`;
    const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    const timer = setTimeout(() => resolve({ socket, ok: false }), 20000);
    socket.on("connect", () => socket.emit("add user", name, { room }));
    socket.on("login", () => {
      clearTimeout(timer);
      resolve({ socket, ok: true });
    });
    socket.on("connect_error", () => {
      clearTimeout(timer);
      resolve({ socket, ok: false });
    });
  });
}

async function connectMany(url, count, sockets, rooms = false, batch = 100) {
  let errors = 0;
  for (let done = 0; done < count; done += batch) {
    const n = Math.min(batch, count - done);
    const room = () =>
      typeof rooms === "string" ? rooms : rooms ? `r${Math.floor(nextId / ROOM_SIZE)}` : "lobby";
    const results = await Promise.all(Array.from({ length: n }, () => connect(url, room())));
    for (const r of results) {
      if (r.ok) sockets.push(r.socket);
      else {
        errors++;
        r.socket.close();
      }
    }
  }
  return errors;
}

async function hold() {
  const sockets = [];
  let errors = 0;
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, arg] = line.trim().split(/\s+/);
    if (command === "quit") break;
    if (command === "target") {
      errors += await connectMany(spec.url, Number(arg) - sockets.length, sockets, true);
      print({ ready: sockets.length, errors });
    }
  }
  sockets.forEach((s) => s.close());
  process.exit(0);
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function fanout() {
  const senders = [];
  const members = [];
  let errors = 0;
  for (const group of spec.senders) errors += await connectMany(group.url, group.count, senders);
  for (const group of spec.receivers) errors += await connectMany(group.url, group.count, members);
  const everyone = [...senders, ...members];
  const latencies = [];
  let received = 0;
  for (const socket of everyone) {
    socket.on("new message", (data) => {
      received++;
      const sentAt = Number(data.message.split(":")[1]);
      latencies.push(now() - sentAt);
    });
  }
  // The send window starts here: bench/run.py samples the servers' CPU
  // between this line and the result, so the connect phase is left out.
  print({ phase: "sending" });
  const cpuStart = process.cpuUsage();
  const started = now();
  const interval = 1000 / spec.rate;
  let sent = 0;
  const total = Math.round(spec.rate * spec.duration);
  await new Promise((resolve) => {
    const tick = () => {
      // Catch up on the schedule so the rate holds even when timers drift.
      const due = Math.min(total, Math.floor((now() - started) / interval) + 1);
      while (sent < due) {
        senders[sent % senders.length].emit("new message", `m:${now()}`);
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(1, interval / 2));
    };
    tick();
  });
  const sendEnded = now();
  const expected = sent * (everyone.length - 1);
  const drainUntil = sendEnded + 3000;
  await new Promise((resolve) => {
    const check = () => (received >= expected || now() > drainUntil ? resolve() : setTimeout(check, 20));
    check();
  });
  const elapsed = (now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  latencies.sort((a, b) => a - b);
  print({
    sent, expected, received, errors, members: everyone.length,
    deliveriesPerS: received / elapsed,
    complete: expected ? received / expected : 1,
    p50: percentile(latencies, 50), p99: percentile(latencies, 99),
    generatorCpu: (cpu.user + cpu.system) / 1e6 / elapsed,
  });
  everyone.forEach((s) => s.close());
  process.exit(0);
}

async function roomsMode() {
  const rooms = [];
  let errors = 0;
  let members = 0;
  let received = 0;
  const latencies = [];
  for (const room of spec.rooms) {
    const sockets = [];
    for (const group of room.members) {
      errors += await connectMany(group.url, group.count, sockets, room.name);
    }
    for (const socket of sockets) {
      socket.on("new message", (data) => {
        received++;
        latencies.push(now() - Number(data.message.split(":")[1]));
      });
    }
    members += sockets.length;
    if (!sockets.length) { print({ error: `nobody could join ${room.name}`, errors }); process.exit(1); }
    rooms.push(sockets);
  }
  print({ phase: "sending" });
  const started = now();
  const interval = 1000 / spec.rate;
  const total = Math.round(spec.rate * spec.duration);
  let sent = 0;
  let expected = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((now() - started) / interval) + 1);
      while (sent < due) {
        const sockets = rooms[sent % rooms.length];
        sockets[0].emit("new message", `m:${now()}`);
        expected += sockets.length - 1;
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(1, interval / 2));
    };
    tick();
  });
  const drainUntil = now() + 3000;
  await new Promise((resolve) => {
    const check = () => (received >= expected || now() > drainUntil ? resolve() : setTimeout(check, 20));
    check();
  });
  const elapsed = (now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  print({
    sent, expected, received, errors, members,
    deliveriesPerS: received / elapsed,
    complete: expected ? received / expected : 1,
    p50: percentile(latencies, 50), p99: percentile(latencies, 99),
  });
  rooms.flat().forEach((s) => s.close());
  process.exit(0);
}

function churnOne(url, room) {
  return new Promise((resolve) => {
    const name = `c${process.pid}-${nextId++}`;
    const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
    const done = (ok) => {
      clearTimeout(timer);
      socket.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 20000);
    socket.on("connect", () => socket.emit("add user", name, { room }));
    socket.on("login", () => {
      // No acknowledgement (the peer has none): engine.io-client writes
      // what is buffered before it closes, so the server reads the message
      // before the disconnect, on both servers alike.
      socket.emit("new message", "hello");
      done(true);
    });
    socket.on("login error", () => done(false));
    socket.on("connect_error", () => done(false));
  });
}

async function churn() {
  const started = now();
  let logins = 0;
  let errors = 0;
  let batchNo = 0;
  print({ phase: "sending" });
  while (now() - started < spec.duration * 1000) {
    const batch = Array.from({ length: spec.batch }, (_, i) =>
      churnOne(spec.urls[(batchNo + i) % spec.urls.length], `room${(batchNo * spec.batch + i) % spec.rooms}`));
    batchNo++;
    for (const ok of await Promise.all(batch)) {
      if (ok) logins++;
      else errors++;
    }
  }
  const elapsed = (now() - started) / 1000;
  print({ logins, errors, elapsed, loginsPerS: logins / elapsed });
  process.exit(0);
}

// The page's connection settings (static/main.js): websocket first, the
// login in `auth` (with the token and the newest message id it has after a
// login), socket.io's jittered backoff capped at 3 s.
function pageUser(url, name, room) {
  const user = { name, room, token: null, lastId: null, dropped: false, loggedInAt: 0 };
  user.socket = io(url, {
    transports: ["websocket"],
    forceNew: true,
    reconnectionDelayMax: 3000,
    timeout: 8000,
    auth: (cb) => cb({ username: name, room, token: user.token, lastId: user.lastId }),
  });
  user.socket.on("login", (data) => {
    user.token = data.token;
    user.loggedInAt = now();
  });
  user.socket.on("disconnect", () => {
    user.dropped = true;
  });
  return user;
}

async function recover() {
  const users = [];
  let loginErrors = 0;
  const latencies = []; // [sentAt, latency, sender index, receiver index]
  for (let i = 0; i < spec.users; i++) {
    const user = pageUser(spec.url, `r${process.pid}-${i}`, `room${Math.floor(i / spec.roomSize)}`);
    const index = users.length;
    user.socket.on("login error", () => loginErrors++);
    user.socket.on("new message", (data) => {
      if (data.id) user.lastId = data.id;
      const [, sentAt, from] = data.message.split(":");
      latencies.push([Number(sentAt), now() - Number(sentAt), Number(from), index]);
    });
    users.push(user);
    // Batches of 100 in flight, as the other modes connect.
    if (users.length % 100 === 0) {
      const deadline = now() + 30000;
      while (users.some((u) => !u.loggedInAt) && now() < deadline) await sleep(20);
    }
  }
  const deadline = now() + 30000;
  while (users.some((u) => !u.loggedInAt) && now() < deadline) await sleep(20);
  const ready = users.filter((u) => u.loggedInAt).length;
  if (ready < users.length) {
    print({ error: `only ${ready} of ${users.length} users logged in`, loginErrors });
    process.exit(1);
  }
  // Messages: one a tick from a user still connected, to its room.
  let sent = 0;
  const started = now();
  const interval = 1000 / spec.rate;
  const sender = setInterval(() => {
    const due = Math.floor((now() - started) / interval);
    while (sent < due) {
      const i = (sent * 7919) % users.length; // spread over the rooms
      const u = users[i];
      if (u.socket.connected && !u.dropped) u.socket.emit("new message", `m:${now()}:${i}`);
      sent++;
    }
  }, Math.max(1, interval / 2));
  await sleep(spec.baseline * 1000);
  print({ phase: "kill" });
  const lines = readline.createInterface({ input: process.stdin });
  let killedAt = 0;
  for await (const line of lines) {
    const [command, at] = line.trim().split(/\s+/);
    if (command === "killed") {
      killedAt = Number(at);
      break;
    }
  }
  // Every user the kill cut off is logged in again after it.
  const cutOff = () => users.filter((u) => u.dropped);
  const back = (u) => u.loggedInAt > killedAt && u.socket.connected;
  const giveUp = killedAt + spec.timeout * 1000;
  // Drops are noticed within moments of the kill (the balancer closes them).
  await sleep(500);
  while (now() < giveUp && !cutOff().every(back)) await sleep(20);
  const affected = cutOff();
  const recovered = affected.filter(back).length;
  const allBack = affected.length > 0 && recovered === affected.length;
  const recoveredAt = allBack ? Math.max(...affected.map((u) => u.loggedInAt)) : giveUp;
  await sleep(1000); // deliveries of the last messages sent during the storm
  clearInterval(sender);
  const steady = (from, to) =>
    latencies
      .filter(([at, , s, r]) => at >= from && at < to && !users[s].dropped && !users[r].dropped)
      .map(([, latency]) => latency)
      .sort((a, b) => a - b);
  const before = steady(killedAt - spec.baseline * 1000, killedAt);
  const during = steady(killedAt, recoveredAt);
  print({
    users: users.length, affected: affected.length, recovered, loginErrors,
    recoverS: allBack ? (recoveredAt - killedAt) / 1000 : null,
    p50Before: percentile(before, 50), p99Before: percentile(before, 99),
    p50During: percentile(during, 50), p99During: percentile(during, 99),
    messagesDuring: during.length,
  });
  users.forEach((u) => u.socket.close());
  process.exit(0);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

if (spec.mode === "hold") hold();
else if (spec.mode === "recover") recover();
else if (spec.mode === "churn") churn();
else if (spec.mode === "rooms") roomsMode();
else fanout();
