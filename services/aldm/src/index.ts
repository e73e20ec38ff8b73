/** ALDM (R-ALDM): the ingress for external events, embeddable for tests and jobs. */
export {
  startAldm,
  Aldm,
  MAX_KEY_LENGTH,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  MAX_RESULTS_PER_RESPONSE,
  type AldmOptions,
  type AldmHandle,
  type AldmCoreOptions,
  type AldmStats,
  type IngestEvent,
  type IngestOutcome,
} from './aldm';
export {
  DirectDelivery,
  RouterDelivery,
  type EventDelivery,
  type DeliveryRequest,
  type DeliveryAck,
  type DirectDeliveryOptions,
  type RouterDeliveryOptions,
} from './delivery';
export { startHttpServer, type HttpServer, type HttpServerOptions } from './http';
export { toHttpError, PayloadTooLargeError, UnsupportedMediaTypeError, MethodNotAllowedError, type HttpError } from './errors';
export { JsonPayload, ENVELOPE_BYTES } from './payload';
