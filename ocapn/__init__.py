"""OCapN over Syrup: the codec, op:/desc: messages, sessions, locators, handoffs and the node."""
