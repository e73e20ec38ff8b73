#!/usr/bin/env node
'use strict';
// The `understudy` command: TypeScript sources run through tsx (no build step).
require('tsx/cjs');
require('../src/main.ts');
