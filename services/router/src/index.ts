/** The Router service (R-RT), embeddable for tests and jobs. */
export { startRouter, type RouterOptions, type RouterHandle } from './router';
export { UnreachableReporter, type UnreachableReporterOptions } from './unreachable';
