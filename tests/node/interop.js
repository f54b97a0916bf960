// The stock socket.io-client (npm, pinned in package.json) as a chat user.
// Usage: node interop.js URL NAME TRANSPORT
// Prints every event it receives as one JSON line; answers "hi NAME" with
// "hello from node" (after a typing event) and leaves on "bye".
const { io } = require("socket.io-client");

const [url, name, transport] = process.argv.slice(2);
const socket = io(url, { transports: [transport], reconnection: false });
const print = (event, data) => console.log(JSON.stringify({ event, data }));

socket.on("connect", () => socket.emit("add user", name));
socket.onAny((event, data) => print(event, data));
socket.on("new message", (data) => {
  if (data.message === `hi ${name}`) {
    socket.emit("typing");
    socket.emit("stop typing");
    socket.emit("new message", "hello from node");
  } else if (data.message === "bye") {
    socket.disconnect();
  }
});
socket.on("disconnect", () => print("disconnect", null));
// Over polling the disconnect packet is still queued when "disconnect"
// fires; the engine closes once it has been sent.
socket.io.on("open", () => socket.io.engine.on("close", () => process.exit(0)));
socket.on("connect_error", (err) => {
  print("connect_error", err.message);
  process.exit(1);
});
setTimeout(() => process.exit(2), 20000);
