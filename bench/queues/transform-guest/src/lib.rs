//! The transform of the queue benchmark (bench/queues.py): each message of the queue it
//! consumes is published to the queue `results` with its data upper-cased (no content type,
//! no metadata). bench/queues/native-consumer does the same natively.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../crates/skiff-runtime/wit",
        world: "skiff:host/messaging",
        generate_all,
    });
}

use bindings::exports::wasi::messaging::incoming_handler::Guest;
use bindings::wasi::messaging::producer;
use bindings::wasi::messaging::types::{Client, Error, Message};

struct Transform;

bindings::export!(Transform with_types_in bindings);

impl Guest for Transform {
    fn handle(message: Message) -> Result<(), Error> {
        let mut data = message.data();
        data.make_ascii_uppercase();
        let client = Client::connect("default")?;
        producer::send(&client, "results", Message::new(&data))
    }
}
