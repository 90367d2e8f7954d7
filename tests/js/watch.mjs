// Connects like a browser dashboard would (auth: {token}, default transports:
// polling, then the upgrade to websocket) and prints one JSON line per event.
// Usage: node watch.mjs URL TOKEN
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const socket = io(url, { auth: { token }, reconnection: false });
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

socket.on("connect", () => {
  print({ event: "connect", transport: socket.io.engine.transport.name });
});
socket.io.engine.on("upgrade", (transport) => print({ event: "upgrade", transport: transport.name }));
socket.on("connect_error", (error) => {
  print({ event: "connect_error", message: error.message });
  process.exit(2);
});
socket.onAny((event, payload) => {
  print({ event, payload, transport: socket.io.engine.transport.name });
});
// The test closes stdin when it has seen enough.
process.stdin.on("end", () => {
  socket.disconnect();
  process.exit(0);
});
process.stdin.resume();
