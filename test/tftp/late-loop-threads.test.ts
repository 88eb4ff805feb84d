/** A late event loop is not a lost packet (late-loop-suite.ts), with the pump on two threads of its own. */
import { describeLateLoop } from "./late-loop-suite.js";

describeLateLoop("TFTP with a late event loop, pump on its threads", "2");
