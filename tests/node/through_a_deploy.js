// The stock socket.io client through a deploy: websocket, a login in `auth`
// with a token of its own, reconnection after 200 ms to 1 s, and a message
// every 200 ms with a 5 s acknowledgement timeout. Prints one JSON line at
// the end: messages sent and acknowledged, refusals by kind, and its times
// offline.
const { io } = require("socket.io-client");

const [url, name, seconds] = process.argv.slice(2);
const token = `${name}-own-token-0123456789`;
const socket = io(url, {
  transports: ["websocket"],
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  auth: (cb) => cb({ username: name, token }),
});
const offline = [];
let since = null;
let sent = 0;
let acked = 0;
const refused = {};
socket.on("disconnect", () => {
  since = Date.now();
});
let first = true;
socket.on("login", () => {
  if (first) console.log(JSON.stringify({ loggedIn: name }));
  first = false;
  if (since !== null) offline.push((Date.now() - since) / 1000);
  since = null;
});
const ticker = setInterval(() => {
  sent += 1;
  socket.timeout(5000).emit("new message", `${name} ${sent}`, (err, ack) => {
    // socket.io fails at once an emit whose acknowledgement was still due
    // when the connection closed, and after the timeout one never answered.
    if (err) {
      const kind = /disconnected/.test(err.message) ? "disconnected" : "timeout";
      refused[kind] = (refused[kind] || 0) + 1;
    }
    else if (ack.error) refused[ack.error] = (refused[ack.error] || 0) + 1;
    else acked += 1;
  });
}, 200);
setTimeout(() => clearInterval(ticker), seconds * 1000);
setTimeout(() => {
  if (since !== null) offline.push((Date.now() - since) / 1000);
  console.log(JSON.stringify({ sent, acked, refused, offline }));
  process.exit(0);
}, seconds * 1000 + 6000);
