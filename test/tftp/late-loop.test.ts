/** A late event loop is not a lost packet (late-loop-suite.ts), with the pump on the loop. */
import { describeLateLoop } from "./late-loop-suite.js";

describeLateLoop("TFTP with a late event loop, pump on the loop", "0");
